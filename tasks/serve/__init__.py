"""``task=serve``: the local web page where a user paints holes in a photo and gets it inpainted."""

from .app import BadUpload, make_app

__all__ = ["BadUpload", "make_app"]
