"""The Generate page's script (a file, so st.switch_page and AppTest can address it)."""

from lanskap.ui.common import guarded
from lanskap.ui.generate_page import page

guarded(page)()
