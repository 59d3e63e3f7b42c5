"""What a case is: typed config, the model registry, the case grid, units, selection and exact sizes. Pure: no TensorFlow."""
