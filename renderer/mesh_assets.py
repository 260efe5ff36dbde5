"""Files a mesh refers to (OBJ material libraries, textures), confined to the mesh's folder.

A mesh file must not make the program read arbitrary files: every name it refers to has to
resolve, symlinks followed, inside the mesh's own folder, or loading fails with MeshError.
A texture that is missing or not an image only warns (TextureWarning): the mesh then loads
with its material colour.
"""
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import trimesh
from PIL import Image

from .mesh_errors import MeshError, TextureWarning

__all__ = ["ConfinedResolver", "checked_material_libraries", "confined_path"]

# MTL statements naming a texture file besides the map_* family.
_TEXTURE_KEYWORDS = ("bump", "disp", "decal", "refl", "norm")

# A comment starts at a '#' that begins the line or follows white space, so a name such as
# "material#1" survives. trimesh's MTL parser keeps trailing comments, and then drops a line
# like "Kd 1 1 1  # white" as unparseable, silently losing the colour.
_COMMENT = re.compile(r"(^|\s)#.*")


def confined_path(mesh_path: Path, name: str, named_in: Path) -> Path:
    """The resolved path of file ``name``, relative to the folder of ``mesh_path``.

    Args:
        mesh_path: the mesh being loaded; its folder is the only place names may lead to.
        name: a file name as written in ``named_in`` (the mesh or one of its MTL files).
        named_in: the file that contains ``name``, for the error message.

    Raises:
        MeshError: ``name`` is absolute, or resolves (following symlinks) outside the folder.
    """
    folder = mesh_path.parent.resolve()
    path: Optional[Path] = None
    if not Path(name).is_absolute():
        try:
            path = (folder / name).resolve()
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
            pass
    if path is None or not path.is_relative_to(folder):
        raise MeshError(f"{named_in} refers to {name!r}, absolute or outside the folder of mesh {mesh_path}; "
                        "refusing to read it")
    return path


class ConfinedResolver(trimesh.resolvers.FilePathResolver):
    """Gives trimesh the files a mesh refers to, from inside the mesh's folder only.

    trimesh catches and merely logs exceptions from some resolver calls (an OBJ's material
    library, its textures), so a refusal is also kept in ``refusal`` for the caller to raise
    once loading returns.
    """

    def __init__(self, mesh_path: Path, replacements: Dict[Path, bytes]):
        """``replacements`` maps resolved paths to the bytes served instead of the file's."""
        super().__init__(str(mesh_path))
        self.mesh_path = mesh_path
        self.replacements = replacements
        self.refusal: Optional[MeshError] = None

    def get(self, name: str) -> bytes:
        """The bytes of file ``name``; MeshError if it lies outside the mesh's folder.

        Unlike trimesh's resolver this tries no fallback names (such as the bare file name),
        so the file read is exactly the one named.
        """
        try:
            path = confined_path(self.mesh_path, name, self.mesh_path)
        except MeshError as refusal:
            self.refusal = self.refusal or refusal
            raise
        if path in self.replacements:
            return self.replacements[path]
        if not path.is_file():
            warnings.warn(f"file {name!r} named by mesh {self.mesh_path} not found; loading the mesh without it",
                          TextureWarning)
            raise FileNotFoundError(name)
        return path.read_bytes()


def checked_material_libraries(obj_path: Path) -> Dict[Path, bytes]:
    """Check an OBJ's material libraries; return each one's text as trimesh should read it.

    Every ``mtllib`` name, and every texture name in those libraries, must stay inside the
    OBJ's folder. A ``map_Kd`` texture that is missing or not an image warns and is dropped,
    so the material keeps its colour; trailing comments are removed.

    Returns:
        ``{resolved library path: checked MTL text}`` for the libraries that exist.

    Raises:
        MeshError: a name leads outside the OBJ's folder.
    """
    libraries = {}
    with open(obj_path, "r", encoding="utf-8", errors="replace") as lines:
        statements = (_statement(line) for line in lines if "mtllib" in line)
        references = [reference for keyword, reference in statements if keyword == "mtllib"]
    for reference in references:
        for name in _possible_names(reference):
            path = confined_path(obj_path, name, obj_path)
            if path.is_file():
                libraries[path] = _checked_library(obj_path, path)
    return libraries


def _statement(line: str) -> Tuple[str, str]:
    """(lower-case keyword, the rest) of an OBJ or MTL line."""
    words = line.split(None, 1)
    return (words[0].lower() if words else ""), (words[1].strip() if len(words) == 2 else "")


def _possible_names(reference: str) -> List[str]:
    """The file names a reference may mean: all of it (names can hold spaces) and each word
    (``mtllib`` lists several files; texture statements put options before the name)."""
    words = reference.split()
    return [reference, *words] if len(words) > 1 else words


def _names_texture(keyword: str) -> bool:
    return keyword.startswith("map_") or keyword in _TEXTURE_KEYWORDS


def _checked_library(obj_path: Path, library: Path) -> bytes:
    """The text of MTL file ``library`` without comments or unusable ``map_Kd`` lines."""
    kept = []
    for raw in library.read_text(encoding="utf-8", errors="replace").splitlines():
        line = _COMMENT.sub("", raw).strip()
        keyword, reference = _statement(line)
        if _names_texture(keyword) and reference:
            for name in _possible_names(reference):
                confined_path(obj_path, name, library)
            if keyword == "map_kd":
                texture = _readable_texture(obj_path, library, reference)
                if texture is None:
                    continue
                # Without its options: trimesh would read them as part of the file name.
                line = f"map_Kd {texture}"
        kept.append(line)
    return "\n".join(kept).encode("utf-8")


def _readable_texture(obj_path: Path, library: Path, reference: str) -> Optional[str]:
    """The file name of a ``map_Kd`` reference if it is a readable image, else None (warned).

    Options (``-s 1 1 1 name.png``) start with '-'; the name is then the last word.
    """
    name = reference.split()[-1] if reference.startswith("-") else reference
    path = confined_path(obj_path, name, library)
    if not path.is_file():
        warnings.warn(f"texture {name!r} named by {library} not found; using the material colour", TextureWarning)
        return None
    try:
        with Image.open(path) as image:
            image.load()
    except Exception:  # PIL raises many types for corrupt data
        warnings.warn(f"texture {path} named by {library} is not a readable image; using the material colour",
                      TextureWarning)
        return None
    return name
