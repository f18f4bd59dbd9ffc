"""The web app: `create_app()` in app.py, Pydantic schemas in schemas.py, the page in static/."""
