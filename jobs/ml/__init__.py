"""Model code on pandas frames (scikit-learn, scipy): no Spark, no MLflow, no configuration."""
