"""The Streamlit web app (``lanskap ui``): thin pages over :class:`lanskap.service.Service`."""
