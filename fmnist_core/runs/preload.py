"""What the jobs' fork server does once, before it forks: the work each job's process would
otherwise repeat before its first step (child.job_context names this module).

- torch's meta-device operators (a run's memory check runs its model there first) import torch's
  decompositions, sympy and dynamo on first use: 1.4 s a process here;
- scikit-learn's PCA and nearest neighbours (the time-lapse's maps and their 5-NN accuracy): 2 s;
- numba, which the engine's compiled kernels use: 0.35 s of each job that trains a conv net (only
  imported: its thread pool starts in the child, at its first step);
- the data set where a folder already holds it (kept per folder, so a job whose settings name
  another folder loads that one).

A job of a small autoencoder took 3.8 s from submit to done, 1.1 s with this. Nothing here may stop
the fork server: whatever fails is left for the job to do (and to report) itself.
"""

import contextlib

with contextlib.suppress(Exception):
    import torch
    from sklearn.decomposition import PCA  # noqa: F401
    from sklearn.neighbors import KNeighborsClassifier  # noqa: F401

    with torch.no_grad():
        torch.nn.Conv2d(1, 1, 1, device="meta")(torch.zeros(1, 1, 2, 2, device="meta")).relu()

with contextlib.suppress(Exception):
    import numba  # noqa: F401  (the engine's kernels, fmnist_core.engine.kernels, import the rest)

with contextlib.suppress(Exception):
    from fmnist_core.data import fashion

    if fashion.find_data_folder() is not None:
        fashion.load_data()
