"""The YAML reader of recipes: PyYAML's safe loader without aliases or duplicate keys.

Aliases (`*name`) are refused because nested ones expand exponentially (a few lines of YAML can
ask for gigabytes: the "billion laughs"), and a recipe never needs them; a key written twice in
one mapping is refused because the second one would silently win.
"""

from __future__ import annotations

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases and duplicate mapping keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in recipes",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)
