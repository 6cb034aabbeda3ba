"""S1: a CNN built from a list of layers (9 experiments) against a residual network."""

from fmnist_core.studies.reports.grid import Conclusion, Entry, Scale, higher

TITLE = "S1: CNN (Keras) vs residual network"
SOURCE = "001_71d0cd6a152e3df8.txt"
SUMMARY = (  # the report in our words, so the lab needs nothing outside the repository
    "A student report (Keras) that builds CNNs from a list of layers and tabulates nine variants "
    "(epochs, batch, optimizer, filters, kernels, pooling, dense units); the best, two 3x3 "
    "convolutions of 35 and 50 filters with batch norm, max-pooling, dropout 0.7 and 256 dense units, "
    "reaches 0.9252 test accuracy in 12 epochs. A residual network overfits and stays near 0.85."
)

# (epochs, batch, optimizer, lr, layers, published accuracy, published minutes), one per table row.
# Keras' default learning rate (1e-3) wherever the report names none.
ROWS = [
    (
        5,
        16,
        "adam",
        1e-3,
        "conv:32:3:same:relu,maxpool:2,conv:16:3:same:relu,maxpool:2,dense:64:relu",
        0.9118,
        15,
    ),
    (
        5,
        8,
        "adam",
        1e-3,
        "conv:32:3:same:relu,maxpool:2,conv:32:5:same:relu,maxpool:2,dense:128:relu",
        0.9139,
        2.5,
    ),
    (
        5,
        16,
        "adam",
        1e-3,
        "conv:64:3:same:relu,maxpool:2,conv:32:5:same:relu,maxpool:2,dense:128:relu",
        0.9023,
        3,
    ),
    (
        5,
        32,
        "rmsprop",
        1e-3,
        "conv:64:3:same:relu,maxpool:2,conv:32:5:same:relu,maxpool:2,conv:16:3:same:tanh,maxpool:2,dense:128:relu",
        0.9079,
        3.5,
    ),
    (
        10,
        64,
        "adam",
        1e-3,
        "conv:64:3:same:relu,maxpool:2,conv:32:5:same:relu,maxpool:2,conv:16:3:same:tanh,maxpool:2,dense:128:relu",
        0.9119,
        6.5,
    ),
    (
        10,
        128,
        "adam",
        1e-3,
        "conv:32:3:same:relu,conv:32:5:valid:relu,maxpool:2,conv:16:5:same:relu,maxpool:2,"
        "conv:8:3:valid:relu,conv:8:3:same:tanh,maxpool:2,dense:256:relu,dense:128:relu",
        0.9068,
        9,
    ),
    (10, 128, "adam", 1e-3, "conv:32:3:same:relu,conv:32:3:valid:relu,maxpool:2,dense:256:relu", 0.9214, 8.5),
    (8, 128, "adam", 1e-3, "conv:35:3:valid:relu,conv:50:3:valid:relu,maxpool:2,dense:256:relu", 0.9229, 8.5),
    (
        12,
        128,
        "adam",
        5e-4,
        "conv:35:3:valid:relu,bn,conv:50:3:valid:relu,bn,maxpool:2,dropout:0.7,dense:256:relu",
        0.9252,
        39,
    ),
]


def entries(scale: Scale) -> list[Entry]:
    rows = [
        Entry(
            "CNN experiments",
            f"row {number}",
            scale.config(
                "cnn", {"layers": layers}, epochs=epochs, batch_size=batch, optimizer=optimizer, lr=lr
            ),
            {"test_accuracy": accuracy},
            minutes,
        )
        for number, (epochs, batch, optimizer, lr, layers, accuracy, minutes) in enumerate(ROWS, start=1)
    ]
    rows.append(
        Entry(
            "CNN experiments",
            "row 9, KL divergence",
            rows[-1].config.replace(loss="kl_div"),
            note="S1: KL divergence came close to cross-entropy",
        )
    )
    rows.append(Entry("Residual network", "resnet", scale.config("resnet"), {"test_accuracy": 0.85}))
    return rows


def _best_row(rows):
    cnn = {
        label: row["test_accuracy"]
        for label, row in rows.items()
        if label.startswith("row ") and "KL" not in label
    }
    best = max(cnn, key=cnn.get)
    return best == "row 9", f"best: {best} ({cnn[best]:.4f})"


def _resnet_overfits(rows):
    train, test = rows["resnet"]["final_train_accuracy"], rows["resnet"]["test_accuracy"]
    return train - test > 0.05, f"train {train:.4f}, test {test:.4f}"


def _kl_close(rows):
    a, b = rows["row 9"]["test_accuracy"], rows["row 9, KL divergence"]["test_accuracy"]
    return abs(a - b) < 0.01, f"cross-entropy {a:.4f}, KL {b:.4f}"


CONCLUSIONS = [
    Conclusion(
        "row 9 (BatchNorm + dropout 0.7) is the best CNN", _best_row, tuple(f"row {i}" for i in range(1, 10))
    ),
    Conclusion(
        "the CNN beats the residual network", higher("test_accuracy", "row 9", "resnet"), ("row 9", "resnet")
    ),
    Conclusion("the residual network overfits (train far above test)", _resnet_overfits, ("resnet",)),
    Conclusion(
        "KL divergence comes within a point of cross-entropy", _kl_close, ("row 9", "row 9, KL divergence")
    ),
]
