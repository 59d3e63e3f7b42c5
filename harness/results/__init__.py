"""Records, the thresholds a record must meet, the baseline and its regression gate. Pure: no TensorFlow."""
