"""
Applications built on the library: the demo (``make demo``) and, over time, others. The library
(data, modeling, evaluation, engine, model_zoo) imports nothing from here.
"""
