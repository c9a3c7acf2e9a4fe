"""Example models, data sets and runners for keras-learndrop."""
