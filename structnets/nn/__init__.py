"""Building blocks shared by the models: MLPs, readouts, encoders."""
