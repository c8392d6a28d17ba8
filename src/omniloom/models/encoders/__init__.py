"""Modality encoders: media tensors in, a sequence of feature vectors per item out."""
