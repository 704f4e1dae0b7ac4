"""Reference solutions of notebook 00 (set-up and baseline)."""
import torch


def uniform_noise_in_ball(x, eps, generator):
    """x (N, C, H, W) in [0, 1], eps (pixel units), generator: a torch.Generator.

    Returns x plus noise drawn uniformly from [-eps, eps] per pixel, clamped to [0, 1] (N, C, H, W).
    """
    u = torch.rand(x.shape, generator=generator)  # one draw, uniform in [0, 1)
    return (x + eps * (2 * u - 1)).clamp(0, 1)


def accuracy(model, x, y, batch_size=100):
    """Fraction (a float in [0, 1]) of the examples x (N, C, H, W) whose predicted class, the
    argmax of model's logits, equals the label y (N,); in eval mode, without gradients, in
    batches of at most batch_size examples."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)
