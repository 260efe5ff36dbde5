"""The error and warning raised while loading meshes (shared by mesh.py and mesh_assets.py)."""


class MeshError(ValueError):
    """A mesh file is missing, unreadable or invalid. The message is one line naming the file."""


class TextureWarning(UserWarning):
    """A file a mesh's looks depend on (its texture, its OBJ material library) is missing or
    unreadable, so the mesh loads without it: with its material colour instead of the texture.

    The message is one line naming the file.
    """
