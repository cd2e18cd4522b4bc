"""The input table: read it, validate every row, pre-flight its media, plan each row, and split a large
table into parts."""
