"""The layout planner: memory per GPU and step time of parallel layouts, before a job starts
(``python -m pretrain.plan``; docs/plan.md)."""
