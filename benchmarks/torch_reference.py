"""The same semi-supervised training step in plain PyTorch, for `benchmarks/throughput.py`.

Same architecture as ievae_jax's MLP (784-500-500 ReLU everywhere, softplus + 1e-4
scales, the first layers split as W_x x + W_r r_y and W_z z + W_r' r_y so the class
part costs K products), same loss J (exact sum over classes, one z per class
hypothesis, Bernoulli log-likelihood as x l - softplus(l), analytic KL, alpha on the
mean cross-entropy), same batch (uint8 images binarised inside the step), Adam.
`kind="m2"` makes r_y the one-hot y, as ievae_jax's M2. Needs `pip install
torch==2.13.0` (optional; see benchmarks/README.md).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class Model(nn.Module):

  def __init__(self, kind: str, num_classes=10, pixels=784, hidden=500, z_dim=8, r_dim=16):
    super().__init__()
    self.kind, self.k, self.z_dim = kind, num_classes, z_dim
    r_dim = num_classes if kind == "m2" else r_dim
    self.classifier = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(),
                                    nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_classes))
    if kind == "ievae":
      self.embedding = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, r_dim))
    self.enc_x = nn.Linear(pixels, hidden, bias=False)
    self.enc_r = nn.Linear(r_dim, hidden, bias=True)
    self.enc_rest = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 2 * z_dim))
    self.dec_z = nn.Linear(z_dim, hidden, bias=False)
    self.dec_r = nn.Linear(r_dim, hidden, bias=True)
    self.dec_rest = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, pixels))

  def class_representations(self):
    eye = torch.eye(self.k, device=self.enc_x.weight.device)
    return eye if self.kind == "m2" else self.embedding(eye)

  def elbo_terms(self, x, r, eps):
    """x (B, 1, P) or (B, P); r (K, R) or (B, R); eps matching -> recon, kl (B, K) or (B,)."""
    out = self.enc_rest(self.enc_x(x) + self.enc_r(r))
    mean, raw = out.chunk(2, dim=-1)
    scale = F.softplus(raw) + 1e-4
    z = mean + scale * eps
    logits = self.dec_rest(self.dec_z(z) + self.dec_r(r))
    recon = (x * logits - F.softplus(logits)).sum(-1)
    kl = 0.5 * (mean ** 2 + scale ** 2 - 1).sum(-1) - torch.log(scale).sum(-1)
    return recon, kl

  def loss(self, x_l, y_l, x_u, alpha):
    r_all = self.class_representations()
    log_prior = -math.log(self.k)
    eps_l = torch.randn(x_l.shape[0], self.z_dim, device=x_l.device)
    recon, kl = self.elbo_terms(x_l, r_all[y_l], eps_l)
    labelled_elbo = recon - kl + log_prior
    cross_entropy = F.cross_entropy(self.classifier(x_l), y_l)
    eps_u = torch.randn(x_u.shape[0], self.k, self.z_dim, device=x_u.device)
    recon_u, kl_u = self.elbo_terms(x_u[:, None], r_all, eps_u)
    class_elbo = recon_u - kl_u + log_prior                              # (B, K)
    log_q = F.log_softmax(self.classifier(x_u), -1)
    q = log_q.exp()
    bound = (q * class_elbo).sum(-1) - (q * log_q).sum(-1)
    return -labelled_elbo.mean() + alpha * cross_entropy - bound.mean()


def make_step(kind: str, alpha: float, compile_mode=None, bfloat16: bool = False,
              device: str = "cpu"):
  """step(images_l uint8 (B, 784), labels (B,), images_u uint8 (B, 784)) -> loss.

  The images and labels must be on `device` ("cpu" or "cuda"), where the model lives.
  bfloat16: the forward pass under `torch.autocast(device, torch.bfloat16)`, PyTorch's
  own mixed precision and the counterpart of our `matmul_dtype="bfloat16"` (its linear
  layers take and return bfloat16, so activations are bfloat16 too; weights stay float32).
  """
  model = Model(kind, z_dim=50 if kind == "m2" else 8).to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

  def forward_backward(x_l, y_l, x_u):
    x_l = torch.bernoulli(x_l.float() / 255.0)
    x_u = torch.bernoulli(x_u.float() / 255.0)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16):
      loss = model.loss(x_l, y_l, x_u, alpha)
    loss.float().backward()
    return loss

  if compile_mode is not None:
    forward_backward = torch.compile(forward_backward, mode=compile_mode)

  def step(x_l, y_l, x_u):
    optimizer.zero_grad(set_to_none=True)
    loss = forward_backward(x_l, y_l, x_u)
    optimizer.step()
    return loss

  return step


def load_flax_params(torch_model: Model, nets: dict) -> None:
  """Copies ievae_jax weights (`Params.nets`, as numpy) into `torch_model`."""
  def dense(layer, p, kernel="kernel"):
    layer.weight.data = torch.tensor(p[kernel]["kernel"] if kernel != "kernel" else p["kernel"]).T
    if layer.bias is not None and "bias" in p:
      layer.bias.data = torch.tensor(p["bias"])
  for i, j in enumerate((0, 2, 4)):
    dense(torch_model.classifier[j], nets["classifier"][f"Dense_{i}"])
  if torch_model.kind == "ievae":
    dense(torch_model.embedding[0], nets["invariant_embedding"]["Dense_0"])
    dense(torch_model.embedding[2], nets["invariant_embedding"]["Dense_1"])
  for prefix, first, second, rest, names in (
      ("equivariant_encoder", torch_model.enc_x, torch_model.enc_r, torch_model.enc_rest,
       ("encoder_input", "Dense_0", "GaussianHead_0")),
      ("decoder", torch_model.dec_z, torch_model.dec_r, torch_model.dec_rest,
       ("decoder_input", "Dense_0", "Dense_1"))):
    p = nets[prefix]
    first.weight.data = torch.tensor(p[names[0]]["from_first"]["kernel"]).T
    second.weight.data = torch.tensor(p[names[0]]["from_second"]["kernel"]).T
    second.bias.data = torch.tensor(p[names[0]]["bias"])
    last = p[names[2]]["mean_and_scale"] if names[2] == "GaussianHead_0" else p[names[2]]
    dense(rest[1], p[names[1]])
    dense(rest[3], last)


def loss_with_zero_noise(torch_model: Model, x_l, y_l, x_u, alpha: float) -> float:
  """The model's loss with every latent noise draw set to 0 (z = posterior mean)."""
  original = torch.randn
  torch.randn = lambda *shape, device=None: torch.zeros(*shape, device=device)
  try:
    with torch.no_grad():
      return float(torch_model.loss(x_l, y_l, x_u, alpha))
  finally:
    torch.randn = original
