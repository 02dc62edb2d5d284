"""
Applications built on the library: the demo (``make demo``), the catalogue search and its
service. The library (data, modeling, evaluation, retrieval, engine, model_zoo) imports nothing
from here.
"""
