"""S4: learning-rate, optimizer and dropout sweeps of the autoencoder; retrained vs frozen encoder."""

from fmnist_core.studies.reports.grid import Conclusion, Entry, Scale, higher, lower

TITLE = "S4: conv autoencoder and classifier, sweeps"
SOURCE = "004_8425423b9262724c.txt"
SUMMARY = (  # the report in our words, so the lab needs nothing outside the repository
    "A student report that sweeps the S0 autoencoder over 30 epochs (learning rates 0.01 to 0.001 "
    "with Adam and with SGD, dropout 0.2 to 0.5, and without the middle linear layer), then compares "
    "a classifier whose encoder is retrained with one whose encoder is frozen."
)
EPOCHS = 30
RATES = (0.01, 0.005, 0.001)


def autoencoder(scale: Scale, **overrides):
    settings = {key: overrides.pop(key) for key in ("dropout", "linear") if key in overrides}
    return scale.config("conv_autoencoder", settings, epochs=EPOCHS, batch_size=100, **overrides)


def entries(scale: Scale) -> list[Entry]:
    rows = [
        Entry(
            f"Autoencoder: learning rate ({optimizer})",
            f"{optimizer} lr={lr}",
            autoencoder(scale, optimizer=optimizer, lr=lr),
        )
        for optimizer in ("adam", "sgd")
        for lr in RATES
    ]
    # The report's dropout figure used SGD at lr 1e-3.
    rows += [
        Entry(
            "Autoencoder: dropout (SGD, lr=0.001)", f"p={p}", autoencoder(scale, optimizer="sgd", dropout=p)
        )
        for p in (0.2, 0.35, 0.5)
    ]
    rows.append(
        Entry("Autoencoder: no middle linear layer", "no linear layer", autoencoder(scale, linear=False))
    )
    encoder_run = autoencoder(scale).run_id
    for frozen in (False, True):
        config = scale.config(
            "encoder_classifier",
            {"encoder_run": encoder_run, "freeze_encoder": frozen, "head": "s0"},  # S0's head, as S4 kept it
            epochs=EPOCHS,
        )
        rows.append(Entry("Classifier", "frozen encoder" if frozen else "retrained encoder", config))
    return rows


CONCLUSIONS = [
    Conclusion(
        f"Adam beats SGD at lr={lr}",
        lower("test_mse", f"adam lr={lr}", f"sgd lr={lr}"),
        (f"adam lr={lr}", f"sgd lr={lr}"),
    )
    for lr in RATES
] + [
    Conclusion(
        "more dropout, higher loss (p=0.2 < p=0.5)",
        lower("final_train_loss", "p=0.2", "p=0.5"),
        ("p=0.2", "p=0.5"),
    ),
    Conclusion(
        "without the middle linear layer the autoencoder learns little (worse than with it)",
        lower("test_mse", "adam lr=0.001", "no linear layer"),
        ("adam lr=0.001", "no linear layer"),
    ),
    Conclusion(
        "the frozen encoder classifies worse than the retrained one",
        higher("test_accuracy", "retrained encoder", "frozen encoder"),
        ("retrained encoder", "frozen encoder"),
    ),
]
