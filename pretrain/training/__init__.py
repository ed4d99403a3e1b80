"""Training: one optimizer step (``step``), the loop and its hooks (``loop``, ``hooks``),
the optimizer and its non-finite guard (``optim``), metrics (``metrics``)."""
