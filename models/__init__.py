"""Model code: features, preprocessing (tf.Transform), the RNN, its export and metrics."""
import os

# tensorflow_transform needs Keras 2; this must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
