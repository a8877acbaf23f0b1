"""Launch the web app: python app.py [--host H] [--port P] [--index DIR | --ray ADDRESS] [--auth user:pass].

Everything else (flags, index check, page, JSON API) lives in the qa/web/ package; see `python app.py --help`.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from qa.web import main  # noqa: E402  (the environment must be set before gradio is imported)

if __name__ == "__main__":
    sys.exit(main())
