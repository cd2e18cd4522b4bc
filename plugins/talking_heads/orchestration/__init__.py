"""The Airflow glue: the row operators, the wait's trigger, extra links, assets and the bodies of the DAG's
Python tasks. Only this layer and the DAG files know Airflow's context; only the DAG files know its params."""
