"""Optional integrations, each imported only on demand (``import keras_swcnn.integrations.tfmot``)."""
