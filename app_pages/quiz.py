"""You vs the model: label 10 or 30 test images yourself, then see your answers beside a classifier's."""

import numpy as np
import streamlit as st

from fmnist_core import views
from fmnist_core.data.fashion import CLASS_NAMES
from ui import keys, plots, widgets
from ui.resources import fashion
from ui.runs import run_label, run_view, runs_that

SEED = 0  # the same images for everyone
EACH = {10: "one", 30: "three"}  # a quiz's length: how many of each class

st.title("You vs the model")
data = fashion()
labels = data.test_labels.numpy()
answers: list[int] = st.session_state.setdefault(keys.QUIZ_ANSWERS, [])
size = widgets.kept(
    st.radio,
    "Images in the quiz",
    "quiz:size",
    30,
    options=tuple(EACH),
    horizontal=True,
    disabled=bool(answers),  # fixed once the first answer is in
    help="A quick round of 10 (one of each class) or the full 30; fixed once you have answered "
    "(undo every answer, or start again, to change it).",
)
quiz = views.quiz_images(labels, per_class=size // 10, seed=SEED)
if len(answers) > len(quiz):  # answers of a longer quiz, from before a link changed its length
    answers.clear()


def answer(position: int, cls: int) -> None:
    """Image `position`'s answer; clicks queued while the page redrew count once, not as answers
    to images nobody saw."""
    if len(answers) == position:
        answers.append(cls)


if len(answers) < len(quiz):
    st.caption(
        f"Label {len(quiz)} test images ({EACH[size]} of each class, the same for everyone) as fast as you "
        "like; then compare yourself with the best classifier in the cache, and with the people Zalando "
        f"asked ({views.HUMAN_ACCURACY:.1%})."
    )
    progress = st.empty()
    left, right = st.columns([1, 2])
    with right:
        st.markdown("**What is it?**")
        for row in range(2):
            columns = st.columns(5)
            for slot, column in enumerate(columns):
                cls = row * 5 + slot
                column.button(
                    CLASS_NAMES[cls],
                    key=f"quiz:answer:{cls}",
                    on_click=answer,
                    args=(len(answers), cls),
                    width="stretch",
                )
        if answers and st.button("Undo the last answer", icon=":material/undo:"):
            answers.pop()
            st.rerun()
    # Drawn after the buttons: a person who sees image N clicks buttons that answer image N (drawn
    # first, a click in between answered the image before, and was dropped).
    left.image(np.kron(data.test_images[quiz[len(answers)], 0].numpy(), np.ones((10, 10))), clamp=True)
    progress.progress(len(answers) / len(quiz), text=f"Image {len(answers) + 1} of {len(quiz)}")
    st.stop()

classifiers = runs_that("classifies")
if classifiers.empty:
    st.info("You are done; train a classifier to compare yourself with it.")
    st.stop()
best = classifiers.iloc[0]
predictions = run_view(best["run_id"]).probabilities.argmax(1)
result = views.quiz_result(quiz, answers, predictions, labels)
first, second, third = st.columns(3)
first.metric("You", f"{result.yours:.1%}")
second.metric("The model", f"{result.model:.1%}", help=run_label(best))
third.metric("People (Zalando's README)", f"{views.HUMAN_ACCURACY:.1%}")
mine, theirs = st.columns(2)
with mine:
    st.markdown("**Your confusion matrix**")
    st.altair_chart(plots.confusion(result.your_confusion).properties(height=380), key="quiz:yours")
with theirs:
    st.markdown(f"**The model's** ({best['model']} `{best['run_id'][:6]}`)")
    st.altair_chart(plots.confusion(result.model_confusion).properties(height=380), key="quiz:model")
if len(result.both_wrong):
    st.markdown(f"**The {len(result.both_wrong)} images you both got wrong**")
    wrong = data.test_images[result.both_wrong, 0].numpy()
    st.image(plots.mosaic(wrong, columns=min(10, len(wrong)), scale=3), clamp=True)
    st.caption(" · ".join(f"#{i} is a {CLASS_NAMES[labels[i]]}" for i in result.both_wrong))
else:
    st.caption("No image fooled you both.")
if st.button("Start again", icon=":material/restart_alt:"):
    answers.clear()
    st.rerun()
