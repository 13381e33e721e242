"""``mnistcnn serve``: a local web page to draw a digit and watch a trained model respond, layer by
layer, forward and backward, and to browse its run.

``inside`` computes what the page shows with the engine (no web code); ``app`` is the Starlette
app around it; ``static/`` the page itself. Starlette and uvicorn are the optional extra
``mnistcnn[serve]``.
"""
