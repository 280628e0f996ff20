"""What each method's original release did that our mathematics does not do by default, in one place per method.

A method's own module (lib/methods/<name>.py) implements its mathematics with named switches for every known
difference from the release (e.g. CADEL.WEIGHTING, LOSS.HCM_FILL, TRAIN.DROP_LAST). The module here for that
method translates the release's YAML spellings into our keys and sets the switches to the release's behaviour
when a release YAML is loaded as shipped. Every difference, its switch and its defaults: docs/deviations.md.
CADEL's release configs are translated by tools/convert_cadel_config.py.
"""


def apply_release_behaviour(cfg, explicit, wanted):
    """Set the release's value of every switch in `wanted` that the YAML / command line leaves unset."""
    notes = []
    for key, (value, why) in wanted.items():
        if key in explicit:
            continue
        node, leaf = key.rsplit(".", 1)
        target = cfg
        for part in node.split("."):
            target = target[part]
        target[leaf] = value
        notes.append(f"{key} {value}: as the release ({why}; docs/deviations.md)")
    return notes
