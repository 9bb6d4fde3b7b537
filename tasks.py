"""Invoke entry point: assembles the collection from the mlopskit package; no logic lives here."""

from pathlib import Path

from mlopskit.tasks import build_collection

ns = build_collection()
ns.configure({"mlopskit": {"root": str(Path(__file__).resolve().parent)}})
