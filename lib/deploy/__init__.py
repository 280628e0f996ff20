"""Using a trained run on new images: predictions (tools/predict.py) and an exported model (tools/export.py).

Neither names a method: both run the method's own forward + predict() through
lib/evaluation/evaluator.predict_batch, as valid.py does, then the post-hoc options (tau, temperature).
"""
