"""Every key the app keeps in st.session_state, in one place: what each holds and who writes it.
Pages and ui modules name these, never a string of their own."""

KEEP = "keep:"  # + a widget's key: its value across pages and reruns (ui.widgets.kept); recipes set it
WIDGET = "widget:"  # + a widget's key: the widget's own state, refilled from KEEP on every run
NAV_CHECKED_URL = "nav:checked_url"  # the URL a session opened with has been checked (once a session)
COMPARE_IMPORTED = "compare:imported"  # (the uploaded bundle's file id, the message it got): once a file
QUIZ_ANSWERS = "quiz:answers"  # the classes a person gave the quiz's images, in order
LIVE_SHOWN = (
    "live:shown"  # the job whose live view this page shows: the sidebar's queue leaves out its progress
)
CONFUSION_CLICKED = "confusion:clicked"  # the confusion cell last clicked (true, predicted)
CONFUSION_TRUE = "confusion:true"  # the cell pickers' widgets (a click moves them)
CONFUSION_PREDICTED = "confusion:predicted"
OWNER = "queue:owner"  # who this visitor is to the job queue (ui.people.me)
OWNER_TOKEN = "queue:owner_token"  # the signed name just issued, until the browser keeps it as a cookie
ADMIN = "queue:admin"  # this session showed the lab's admin token once: it may stop any job
ADMIN_GIVEN = "queue:admin_given"  # a ?admin= value taken out of the address, until it is checked
INSIDE_RUN = "inside:run"  # the inside page's run picker (the explorer's click through clears it)
INSIDE_LAYER = "inside:layer"  # the unit view's layer picker (a walk down, the page's address set it)
INSIDE_TAB = "tab"  # the inside page's open tab, bound to its URL (?tab=...): an address opens one
INSIDE_WRITTEN = "inside:written"  # the address the page last wrote (run, layer, unit): another one is a Back
INSIDE_OPENED_AT_UNIT = (
    "inside:opened-at-unit"  # the session began at a unit's address: its tab is the default
)
INSIDE_BESIDE = "inside:beside"  # the run beside (its picker's key; ?beside=ID in the URL)
INSIDE_NOTES = "inside:notes"  # what is wrong with the page's address, said on the render that found it
INSIDE_ADDRESS = "inside:address"  # the page's address was read (once a session): (layer, unit) it asks for
SWEEP_OPEN = "sweep:open"  # the sweep whose trials the sweep page shows (a started sweep sets it)
SWEEP_SHOWN = "sweep:shown"  # the sweep page's picker of kept sweeps (cleared when a sweep starts)
TRY_IMAGE = (
    "try:image"  # the last drawing or upload Try it prepared (28x28 in [0, 1]): the inside page looks at it
)


def kept(key: str) -> str:
    return KEEP + key


def picked(capability: str) -> str:
    """The run last trained or picked that can do `capability` (a form's run picker starts there)."""
    return f"picked:{capability}"


def live_figure(run_id: str) -> str:
    """(version, figure) of a training run's live curves: rebuilt only when the version changes."""
    return f"live:figure:{run_id}"


def waiting(names: tuple[str, ...]) -> str:
    """The run ids of the active jobs a page waits for, at its last look (one ending reruns the page)."""
    return "waiting:" + ",".join(names)


def guess(report: str, scale: float, index: int) -> str:
    """A person's guess on a report's claim, before its verdict shows."""
    return f"guess:{report}:{scale}:{index}"


def layer_of(run_id: str) -> str:
    """The layer last shown up close for a run: coming back to the run shows it again."""
    return f"inside:layer-of:{run_id}"


def unit_chart(run_id: str, layer: str) -> str:
    """The chart of a layer's units on the inside page: its clicks pick a unit."""
    return f"inside:units:{run_id}:{layer}"


def walked_unit(run_id: str, layer: str) -> str:
    """The unit of a layer picked by a walk down from a unit it feeds, or by the page's address
    (a click on the layer's chart goes before it)."""
    return f"inside:walked:{run_id}:{layer}"


def feature_several(run_id: str) -> str:
    """Whether the unit view shows four feature pictures, pushed apart, rather than one."""
    return f"inside:featureviz:several:{run_id}"


def feature_added(run_id: str, layer: str) -> str:
    """The units of a layer added to the selected one's picture (their sum is what is drawn)."""
    return f"inside:featureviz:added:{run_id}:{layer}"
