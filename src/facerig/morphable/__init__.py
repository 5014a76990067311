"""Face models behind one protocol: builtin (MediaPipe topology), ict (ICT-FaceKit), flame (user file)."""

from facerig.morphable.base import FaceModel

__all__ = ["FaceModel", "as_face_model", "load_face_model"]


def as_face_model(model: "FaceModel | str") -> FaceModel:
    """A FaceModel as is, or the tier of that name loaded with its default file."""
    return model if isinstance(model, FaceModel) else load_face_model(model)


def load_face_model(name: str = "builtin", path: str | None = None, **kwargs) -> FaceModel:
    """Load a face model by tier name: ``builtin`` | ``ict`` | ``flame``.

    ``path`` overrides where the tier's file is looked for (ict: converted npz; flame:
    ``generic_model.pkl`` or npz; default from ``FACERIG_FLAME``).
    """
    from facerig.errors import InvalidInput

    if name == "builtin":
        from facerig.morphable.builtin import BuiltinFaceModel

        return BuiltinFaceModel.load(**kwargs)
    if name == "ict":
        from facerig.morphable.ict import ICTFaceModel

        return ICTFaceModel.load(path, **kwargs)
    if name == "flame":
        from facerig.morphable.flame import FLAMEFaceModel

        return FLAMEFaceModel.load(path, **kwargs)
    raise InvalidInput("face model", "one of builtin, ict, flame", name)
