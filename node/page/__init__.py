"""The guardian's own page: served by its node, on loopback by default, to its guardian alone.

  app.py       the routes (Starlette): each action is the node's control command, called in-process
  session.py   one-time login tokens, the session cookie, CSRF tokens
  views.py     what the templates show, gathered from the node's control commands
  templates/   Jinja2, readable without JavaScript
  static/      the one stylesheet and the one script (polling), served from the package
"""
