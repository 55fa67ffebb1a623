"""The Flywheel dashboard: `streamlit run dashboard/app.py` (or `flywheel dashboard`).

Reads the settings once, checks the database, signs the user in, then declares the pages.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import auth
from dashboard.queries import SETTINGS_KEY, check_migrated, show_flash
from flywheel.settings import SettingsError, get_settings
from storage.db import DatabaseNotMigrated

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Flywheel", page_icon="🔁", layout="wide")

try:
    st.session_state[SETTINGS_KEY] = settings = get_settings()
    check_migrated(settings.database_url)
except (SettingsError, DatabaseNotMigrated) as exc:
    st.error(str(exc))
    st.stop()

actor = auth.current_actor()
if actor is None:
    page = st.navigation([st.Page(auth.sign_in_page, title="Sign in", icon="🔑")], position="hidden")
else:
    auth.account_sidebar(actor)
    page = st.navigation(
        {
            "Flywheel": [
                st.Page(PAGES / "overview.py", title="Overview", icon="📈", default=True),
                st.Page(PAGES / "review.py", title="Review queue", icon="✅"),
                st.Page(PAGES / "data.py", title="Data", icon="🗂️"),
            ],
            "Models": [
                st.Page(PAGES / "training.py", title="Training", icon="🏋️"),
                st.Page(PAGES / "models.py", title="Models", icon="🧬"),
                st.Page(PAGES / "playground.py", title="Playground", icon="💬"),
            ],
        }
    )
    show_flash()
page.run()
