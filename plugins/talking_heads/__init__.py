"""The ``talking_heads`` pipeline: input table -> validate -> submit -> wait -> download -> outcomes.

The generic DashScope building blocks live in :mod:`dashscope_provider`; this package holds what is
specific to the table-driven pipeline: row validation, the per-row ledger that prevents paying twice,
prices, and the outcome table.
"""
