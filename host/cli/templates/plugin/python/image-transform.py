"""{{name}}: a wulf image transform in Python. Drops /usr/share/doc from the image and adds
/etc/{{name}} naming the image it was built into."""
from typing import List

from wit_world import exports
from wit_world.exports.transform import Action, Action_Drop, Action_Keep, Entry
from wit_world.imports.types import FileContent_Regular, FileEntry

# One image build is one instance: state kept between its calls lives here.
state = {"image": ""}


def dropped(path: str) -> bool:
    return path == "/usr/share/doc" or path.startswith("/usr/share/doc/")


class Transform(exports.Transform):
    """The exported interface `transform`: the class is named after it."""

    def begin(self, image: str) -> None:
        state["image"] = image

    def filter(self, entries: List[Entry]) -> List[Action]:
        return [Action_Drop() if dropped(e.path) else Action_Keep() for e in entries]

    def rewrite(self, entry: Entry, content: bytes) -> Action:
        return Action_Keep()

    def finish(self) -> List[FileEntry]:
        text = f"built into {state['image']}\n".encode()
        return [FileEntry(path="/etc/{{name}}", mode=0o644, uid=0, gid=0,
                          content=FileContent_Regular(text))]
