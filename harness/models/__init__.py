"""The models and the data they train on: builders, the text encoder, pre-trained weights, datasets."""
