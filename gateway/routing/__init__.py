"""Routing: which target serves a request. Pure and synchronous; the
dispatcher (gateway/dispatch.py) runs the attempts it plans."""
