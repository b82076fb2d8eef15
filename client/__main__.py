"""
Lets C{python -m client HOST PORT} start the client.
"""

from client.main import main

if __name__ == "__main__":
    main()
