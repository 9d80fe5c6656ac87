"""Figures of a trained model, as PNG files (matplotlib, Agg backend).

Each function takes arrays already computed (pixel probabilities, embeddings) and a
path, so that the model code stays free of plotting and the figures are easy to test.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def _image_grid(images: np.ndarray) -> np.ndarray:
  """(R, C, H, W, 1) -> one (R H, C W) mosaic with a 1-pixel grey border."""
  rows, cols, h, w = images.shape[:4]
  canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 0.5)
  for i in range(rows):
    for j in range(cols):
      canvas[1 + i * (h + 1):1 + i * (h + 1) + h, 1 + j * (w + 1):1 + j * (w + 1) + w] = \
          images[i, j, ..., 0]
  return canvas


def save_grid(images: np.ndarray, path: str, title: str, row_labels=None, col_labels=None):
  """Writes a mosaic of (R, C, H, W, 1) images in [0, 1]."""
  rows, cols, h, w = images.shape[:4]
  fig, ax = plt.subplots(figsize=(0.6 * cols + 1, 0.6 * rows + 0.8))
  ax.imshow(_image_grid(images), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
  ax.set_title(title, fontsize=9)
  ax.set_xticks([1 + j * (w + 1) + w / 2 for j in range(cols)] if col_labels else [])
  ax.set_yticks([1 + i * (h + 1) + h / 2 for i in range(rows)] if row_labels else [])
  if col_labels:
    ax.set_xticklabels(col_labels, fontsize=7)
  if row_labels:
    ax.set_yticklabels(row_labels, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def save_confusions(confusions, labelled_images: np.ndarray, labelled_labels: np.ndarray,
                    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: str,
                    title: str, per_row: int = 20):
  """Three rows of up to `per_row` images for each confusion {"true": t, "predicted": p}:
  the labelled images of class t, the images of class t predicted p, and images of
  class t predicted t. Images uint8 (N, H, W, 1), labels and predictions (N,); short
  rows are padded with blanks."""
  grid, names = [], []
  for confusion in confusions:
    true, predicted = confusion["true"], confusion["predicted"]
    for name, chosen in (
        (f"labelled {true}s", labelled_images[labelled_labels == true]),
        (f"{true}s read as {predicted}", images[(labels == true) & (predictions == predicted)]),
        (f"{true}s read right", images[(labels == true) & (predictions == true)])):
      strip = np.zeros((per_row,) + images.shape[1:], np.float32)
      strip[:min(per_row, len(chosen))] = chosen[:per_row] / 255.0
      grid.append(strip)
      names.append(name)
  save_grid(np.stack(grid), path, title, row_labels=names)


def save_traversals(images: np.ndarray, path: str, grid_values: np.ndarray, title: str):
  """One panel per class of a 2-D latent traversal: images (K, G, G, H, W, 1)."""
  k = images.shape[0]
  cols = min(k, 5)
  rows = -(-k // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
  for c, ax in enumerate(axes.flat):
    ax.axis("off")
    if c < k:
      ax.imshow(_image_grid(images[c]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
      ax.set_title(f"class {c}" if k > 1 else "z", fontsize=8)
  fig.suptitle(f"{title} (z1, z2 in [{grid_values[0]:.1f}, {grid_values[-1]:.1f}])", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def pca_2d(features: np.ndarray) -> np.ndarray:
  """(N, D) -> (N, 2): projection on the two leading principal components."""
  centred = features - features.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  out = centred @ vt[:2].T
  return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def save_embeddings(panels, labels: np.ndarray, path: str):
  """Scatter plots coloured by class. panels: [(title, (N, D) features)]."""
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
  for ax, (title, features) in zip(axes[0], panels):
    xy = pca_2d(np.asarray(features, np.float64))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3, alpha=0.6)
    ax.set_title(title + " (first 2 principal components)", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(int(labels.max()) + 1), label="class")
  fig.savefig(path, dpi=120)
  plt.close(fig)
