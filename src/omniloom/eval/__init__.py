"""Evaluation: the synthetic image–text data set, metrics, suites and reports."""
