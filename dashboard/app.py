"""The Flywheel dashboard: `streamlit run dashboard/app.py` (or `flywheel dashboard`).

Reads the settings once, checks the database, signs the user in, then declares the pages.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import auth, metrics
from dashboard.queries import SETTINGS_KEY, check_migrated, show_flash
from flywheel.settings import SettingsError, get_settings
from storage.db import DatabaseNotMigrated

VIEWS = Path(__file__).parent / "views"  # not "pages/": Streamlit would serve those files without sign-in

st.set_page_config(page_title="Flywheel", page_icon="🔁", layout="wide")

try:
    st.session_state[SETTINGS_KEY] = settings = get_settings()
    check_migrated(settings.database_url)
except (SettingsError, DatabaseNotMigrated) as exc:
    st.error(str(exc))
    st.stop()

actor = auth.signed_in_actor()
if actor is None:
    page = st.navigation([st.Page(auth.sign_in_page, title="Sign in", icon=":material/login:")], position="hidden")
else:
    auth.account_sidebar(actor)
    pages = {
        "Flywheel": [
            st.Page(VIEWS / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
            st.Page(VIEWS / "review.py", title="Review queue", icon=":material/fact_check:"),
            st.Page(VIEWS / "data.py", title="Data", icon=":material/database:"),
        ],
        "Models": [
            st.Page(VIEWS / "training.py", title="Training", icon=":material/model_training:"),
            st.Page(VIEWS / "models.py", title="Models", icon=":material/deployed_code:"),
            st.Page(VIEWS / "playground.py", title="Playground", icon=":material/forum:"),
        ],
    }
    if auth.is_admin(actor):  # pages a reviewer's navigation does not have cannot be opened, by link or URL
        pages["Team"] = [
            st.Page(VIEWS / "accounts.py", title="Accounts", icon=":material/group:"),
            st.Page(VIEWS / "audit.py", title="Audit log", icon=":material/history:"),
        ]
    page = st.navigation(pages)
    show_flash()
metrics.render(page)
