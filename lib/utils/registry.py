"""Name -> object registries (no `eval` of config strings anywhere)."""
from .errors import UserError


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, name=None):
        def deco(obj):
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name, key_hint=""):
        if name not in self._items:
            where = f" ({key_hint})" if key_hint else ""
            raise UserError(f"unknown {self.kind} {name!r}{where}; valid: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self):
        return sorted(self._items)

    def __contains__(self, name):
        return name in self._items


def choose(name, valid, key, error=UserError):
    """`name` if it is one of `valid`, else the one-line error `unknown KEY 'name'; valid: a, b`."""
    if name not in valid:
        raise error(f"unknown {key} {name!r}; valid: {', '.join(valid)}")
    return name
