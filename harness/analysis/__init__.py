"""Statistics over a run folder: seeds, drop fits, the order test, the planner, the report. Pure: no TensorFlow."""
