"""One case, end to end: pre-train (cached), select, quantize, fine-tune, export, audit, evaluate."""
