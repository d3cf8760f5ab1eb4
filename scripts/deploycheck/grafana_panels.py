"""Dashboards looked at the way Grafana draws them, without a Grafana: the data frames each Redis
query returns (their field names and types, as the redis-datasource plugin builds them), carried
through the panel's transformations, then what the panel keeps of them.

- The plugin (redis-datasource 2.2.0): GET gives one field `Value`; HGETALL one field per hash key;
  a value that parses as a number is a number field, any other a string field. XRANGE gives
  `$streamId` (string), `$time` (a time field the plugin makes from each stream id) and one string
  field per entry field. What our keys hold comes from the contract (shared DESIGN.md, "Redis").
- Transformations: filterFieldsByName (include names or pattern), organize (excludeByName),
  convertFieldType.
- Panels: a time series needs a time field and a number field after the transformations ("Data
  does not have a time field" otherwise); stat, gauge, bar gauge and pie chart reduce only number
  fields unless reduceOptions.fields names others (a regex such as /.*/ takes every field), and
  only first/last(NotNull) reduce a string.
- Refresh: a dashboard's refresh below the server's dashboards.min_refresh_interval (5s by
  default) is raised to it.
"""

import re

# The kinds of value our Redis keys hold (the contract): number, string (RFC 3339 times) per key.
HASH_VALUES = {
    "votes:band": {"*": "number"},
    "votes:album": {"*": "number"},
    "votes:last": {"received_at": "string", "counted_at": "string"},
    "votes:offsets": {"*": "number"},
}
STRING_VALUES = {"votes:total": "number"}
STREAM_FIELDS = {"votes:timeline": ["n", "total"]}

STRING_REDUCERS = {"first", "firstNotNull", "last", "lastNotNull"}

# The refresh picker's intervals when a dashboard's timepicker gives none (Grafana's
# packages/grafana-ui RefreshPicker `defaultIntervals`): a dashboard refresh outside its picker's
# list starts no timer.
DEFAULT_REFRESH_INTERVALS = ["5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d"]


# A round's keys (`votes:round:$round:band`, with the dashboard's variable) hold what the
# all-time keys hold.
ROUND_KEY = re.compile(r"^votes:round:[^:]+:(band|album|total)$")


def redis_frame(target):
    """[(field name, type)] of the frame the plugin returns for one Redis query."""
    command, key = target.get("command"), target.get("keyName")
    round_key = ROUND_KEY.match(key or "")
    if round_key:
        key = f"votes:{round_key.group(1)}"
    if command == "get":
        return [("Value", STRING_VALUES.get(key, "string"))]
    if command == "hgetall":
        kinds = HASH_VALUES.get(key, {})
        if "*" in kinds:
            return [("<any hash field>", kinds["*"])]
        return list(kinds.items())
    if command == "xrange":
        return [("$streamId", "string"), ("$time", "time")] + [(f, "string") for f in STREAM_FIELDS.get(key, [])]
    return None


def _name_matches(option, name):
    names = option.get("names") or []
    if name in names or name == "<any hash field>" and names:
        return True
    pattern = option.get("pattern")
    if pattern:
        return re.search(pattern, name) is not None
    return False


def transform(fields, transformations):
    for t in transformations or []:
        kind, options = t.get("id"), t.get("options") or {}
        if t.get("disabled"):
            continue
        if kind == "filterFieldsByName":
            if "include" in options:
                fields = [f for f in fields if _name_matches(options["include"], f[0])]
            if "exclude" in options:
                fields = [f for f in fields if not _name_matches(options["exclude"], f[0])]
        elif kind == "organize":
            excluded = {k for k, v in (options.get("excludeByName") or {}).items() if v}
            fields = [f for f in fields if f[0] not in excluded]
        elif kind == "convertFieldType":
            conversions = {c.get("targetField"): c.get("destinationType") for c in options.get("conversions") or []}
            fields = [(n, conversions.get(n, typ)) for n, typ in fields]
        else:
            raise ValueError(f"transformation {kind} is not modelled here; add it to grafana_panels.py")
    return fields


def _fields_regex(spec):
    """reduceOptions.fields: "" = numeric fields; "/re/" a regex; otherwise a field name."""
    if not spec:
        return None
    if spec.startswith("/") and spec.endswith("/") and len(spec) > 1:
        return re.compile(spec[1:-1])
    return re.compile("^" + re.escape(spec) + "$")


def variable_problems(dashboard):
    """The dashboard's `round` variable must offer the round to watch first: it reads the
    consumers' ordered list and keeps its order (Grafana picks the first option on opening)."""
    problems = []
    for variable in (dashboard.get("templating") or {}).get("list", []):
        if variable.get("name") != "round":
            continue
        if variable.get("query") != "LRANGE rounds:picker 0 -1":
            problems.append(f"variable round: query {variable.get('query')!r} does not read rounds:picker in its order")
        if variable.get("sort", 0) != 0:
            problems.append(f"variable round: sort {variable.get('sort')} reorders the picker (the open round is not first)")
        if variable.get("current"):
            problems.append(f"variable round: a saved current value {variable.get('current')} is kept over the open round")
    return problems


def panel_problems(panel):
    """What Grafana would show as "No data" (or refuse) for one panel fed by Redis queries."""
    problems = []
    frames = []
    for target in panel.get("targets", []):
        if (target.get("datasource") or {}).get("type") != "redis-datasource":
            return []  # Prometheus panels: their series are checked against /metrics elsewhere
        if target.get("command") == "xrange" and (target.get("start") or target.get("end")):
            problems.append(f"XRANGE {target.get('keyName')} from {target.get('start')} to {target.get('end')} reads past the "
                            "dashboard's time range (without start and end the plugin reads the time range)")
        frame = redis_frame(target)
        if frame is None:
            problems.append(f"query {target.get('command')} {target.get('keyName')} is not modelled")
            continue
        frames.append(transform(frame, panel.get("transformations")))
    kind = panel.get("type")
    for fields in frames:
        types = [t for _, t in fields]
        if kind == "timeseries":
            if "time" not in types:
                problems.append(f"no time field after the transformations (fields: {fields})")
            if "number" not in types:
                problems.append(f"no number field to plot (fields: {fields})")
        elif kind in ("stat", "gauge", "bargauge", "piechart"):
            reduce = (panel.get("options") or {}).get("reduceOptions") or {}
            regex = _fields_regex(reduce.get("fields", ""))
            calcs = reduce.get("calcs") or ["lastNotNull"]
            if regex is None:
                kept = [f for f in fields if f[1] == "number"]
            else:
                kept = [f for f in fields if f[1] != "time" and (f[0] == "<any hash field>" or regex.search(f[0]))]
                if any(t == "string" for _, t in kept) and not set(calcs) <= STRING_REDUCERS:
                    problems.append(f"calcs {calcs} cannot reduce string fields")
            if not kept:
                problems.append(f"the panel reduces number fields only and the query returns {fields}"
                                if regex is None else f"reduceOptions.fields {reduce.get('fields')!r} keeps none of {fields}")
    return problems


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text or "")
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
