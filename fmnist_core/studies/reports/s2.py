"""S2: an autoencoder improved step by step, then classifiers on the optimised encoder."""

from fmnist_core.studies.reports.grid import Conclusion, Entry, Scale, lower

TITLE = "S2: autoencoder + CNN hybrid"
SOURCE = "002_f4850e40f654d6a2.txt"
SUMMARY = (  # the report in our words, so the lab needs nothing outside the repository
    "A student report (PyTorch) that improves the S0 autoencoder step by step over 30 epochs (no "
    "dropout, batch norm before pooling, average pooling second, 64 and 96 kernels), each step a row "
    "of final train and validation loss, then classifies with the improved encoder under three heads "
    "and optimizers (about 91% validation accuracy)."
)
EPOCHS = 30
# The report gives losses in percent; stored here as fractions.
LADDER = [
    ("baseline", {}, 0.0858, 0.0726),
    ("dropout 0", {"dropout": 0.0}, 0.0300, 0.0312),
    ("+ BatchNorm", {"dropout": 0.0, "batchnorm": True}, 0.0270, 0.0283),
    ("+ max/avg pooling", {"dropout": 0.0, "batchnorm": True, "pooling": ("max", "avg")}, 0.0229, 0.0231),
    (
        "+ 64/96 kernels",
        {"dropout": 0.0, "batchnorm": True, "pooling": ("max", "avg"), "channels": (64, 96)},
        0.0159,
        0.0175,
    ),
]
CLASSIFIERS = [
    ("classifier baseline", {"head": "fc"}, {}, (0.9812, 0.9127, 0.0531, 0.3312)),
    ("FC + Adam", {"head": "wide"}, {}, (0.9806, 0.9083, 0.0520, 0.4182)),
    # The report names no SGD learning rate; 0.01 with momentum 0.9 is the usual choice.
    (
        "FC + SGD",
        {"head": "wide"},
        {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
        (0.9465, 0.9148, 0.1529, 0.2463),
    ),
]


def entries(scale: Scale) -> list[Entry]:
    rows = []
    for label, settings, train_loss, val_loss in LADDER:
        config = scale.config("conv_autoencoder", settings, epochs=EPOCHS, batch_size=100)
        rows.append(
            Entry(
                "Autoencoder ladder",
                label,
                config,
                {"final_train_loss": train_loss, "final_val_loss": val_loss},
            )
        )
    encoder_run = rows[-1].config.run_id
    for label, settings, overrides, (train_acc, val_acc, train_loss, val_loss) in CLASSIFIERS:
        config = scale.config(
            "encoder_classifier", {"encoder_run": encoder_run, **settings}, epochs=EPOCHS, **overrides
        )
        published = {
            "final_train_accuracy": train_acc,
            "final_val_accuracy": val_acc,
            "final_train_loss": train_loss,
            "final_val_loss": val_loss,
        }
        rows.append(Entry("Classifiers on the optimised encoder", label, config, published))
    return rows


CONCLUSIONS = [
    Conclusion(
        f"'{after}' improves on '{before}' (validation loss)",
        lower("final_val_loss", after, before),
        (after, before),
    )
    for (before, *_), (after, *_) in zip(LADDER, LADDER[1:], strict=False)
] + [
    Conclusion(
        "FC + SGD overfits least (lowest validation loss of the three)",
        lambda rows: (
            min(("classifier baseline", "FC + Adam", "FC + SGD"), key=lambda k: rows[k]["final_val_loss"])
            == "FC + SGD",
            ", ".join(
                f"{k}: {rows[k]['final_val_loss']:.4f}"
                for k in ("classifier baseline", "FC + Adam", "FC + SGD")
            ),
        ),
        ("classifier baseline", "FC + Adam", "FC + SGD"),
    )
]
