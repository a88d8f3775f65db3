"""The web tier: Flask-SocketIO under gevent (Procfile ``web``). Entry point: web/wsgi.py."""
