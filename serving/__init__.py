"""Chapter "Model serialization" and a REST prediction service.

``save_load.py`` saves and reloads a model in every format Keras 3 offers;
``app.py`` serves one saved model over HTTP (FastAPI + uvicorn).
"""
