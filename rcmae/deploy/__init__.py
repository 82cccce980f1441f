"""Deployment: exported detector bundles and their graphs, monitoring of long recordings, the Gradio demo."""
