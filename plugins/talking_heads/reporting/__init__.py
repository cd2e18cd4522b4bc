"""What a run reports: the outcome table, costs per ratio, the cost report and the run's summary and note."""
