"""The synthetic face renderer: identities drawn as geometry and colours, and images of them rendered with numpy.

Each identity is a fixed draw of geometry and appearance (face shape and jaw, skin tone, hair colour,
hairline and style, ears, eye spacing/size/iris colour, brows, nose, mouth and lips, beard, moustache,
glasses, a mole). Each image of it adds nuisances whose size scales with `difficulty` (0 clean, 1
default, 2 hard): residual alignment error (rotation, shift, scale), yaw (a cylinder warp with
protruding nose and mouth), expression (smile, open mouth, raised brows, squint, gaze), small changes
of hair and beard, glasses taken off, occluders (mask, sunglasses, hand), background, lighting
direction and colour cast, defocus and sensor noise. Rendering is vectorised: full-frame layers are
few, and small features are computed only inside their bounding box in the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RENDERER_VERSION = 1

_SKIN_LIGHT = np.array([238.0, 205.0, 180.0])
_SKIN_DARK = np.array([92.0, 62.0, 45.0])
_HAIR = np.array([[25, 20, 18], [70, 45, 30], [120, 80, 45], [200, 165, 105], [150, 60, 30], [160, 160, 160]], float)
_IRIS = np.array([[70, 40, 20], [110, 75, 40], [60, 100, 150], [80, 120, 80], [110, 115, 120]], float)
_FRAMES = np.array([[20, 20, 20], [90, 60, 30], [140, 140, 150], [120, 20, 30]], float)
_WHITE = np.array([236.0, 232.0, 226.0])
_CYL_RADIUS = 1.05  # radius of the head cylinder for the yaw warp, in face units


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, float(v)))


def _clip_(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip in place with two ufunc calls (np.clip's Python wrapper dominates on small arrays)."""
    np.maximum(a, lo, out=a)
    return np.minimum(a, hi, out=a)


def _col(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32), 0, 255).reshape(3, 1, 1)


@dataclass(frozen=True, eq=False)
class FaceIdentity:
    """Identity-specific geometry (face units: the image spans [-1, 1]) and colours (0..255 RGB)."""

    face_w: float
    face_h: float
    face_y: float
    jaw: float
    skin: np.ndarray
    ear_y: float
    ear_size: float
    hair: np.ndarray
    hairline: float
    hair_curve: float
    hair_tilt: float
    hair_volume: float
    hair_length: float
    hair_side: float
    eye_sep: float
    eye_y: float
    eye_w: float
    eye_h: float
    iris: np.ndarray
    iris_r: float
    brow_gap: float
    brow_len: float
    brow_th: float
    brow_slant: float
    brow_arch: float
    nose_tip: float
    nose_w: float
    nose_dark: float
    mouth_y: float
    mouth_w: float
    lip_th: float
    lips: np.ndarray
    mouth_curve: float
    beard: float
    beard_top: float
    moustache: float
    glasses: bool
    glasses_r: float
    glasses_th: float
    frame: np.ndarray
    mole: bool
    mole_u: float
    mole_v: float
    mole_r: float


def sample_identity(seed: int, identity: int) -> FaceIdentity:
    """Draw identity `identity` of the population `seed` (deterministic)."""
    rng = np.random.default_rng([seed, identity, 1])
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK + rng.normal(0, 7, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 12, 3)
    eye_y = u(-0.17, -0.03)
    eye_h = u(0.032, 0.058)
    nose_tip = eye_y + u(0.27, 0.40)
    mouth_y = nose_tip + u(0.15, 0.25)
    lip_th = u(0.025, 0.055)
    bald = u() < 0.08
    beard = u(0.45, 0.95) if u() < 0.22 else 0.0
    moustache = u(0.5, 0.95) if u() < 0.22 else 0.0
    glasses = bool(u() < 0.2)
    mole = bool(u() < 0.45)
    lips = skin + u(0.25, 0.65) * (np.array([175.0, 60.0, 75.0]) - skin)
    return FaceIdentity(
        face_w=u(0.58, 0.78), face_h=u(0.86, 1.05), face_y=u(0.02, 0.14), jaw=u(0.0, 1.0),
        skin=_col(skin), ear_y=u(-0.08, 0.08), ear_size=u(0.09, 0.15),
        hair=_col(hair), hairline=-1.3 if bald else u(-0.78, -0.42), hair_curve=u(-0.3, 0.7),
        hair_tilt=u(-0.25, 0.25), hair_volume=u(0.02, 0.2), hair_length=u(-0.2, 1.3), hair_side=u(0.75, 0.97),
        eye_sep=u(0.25, 0.36), eye_y=eye_y, eye_w=u(0.085, 0.13), eye_h=eye_h,
        iris=_col(_IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 10, 3)), iris_r=eye_h * u(0.75, 1.05),
        brow_gap=u(0.075, 0.14), brow_len=u(0.09, 0.15), brow_th=u(0.016, 0.04),
        brow_slant=u(-0.3, 0.3), brow_arch=u(0.0, 3.0),
        nose_tip=nose_tip, nose_w=u(0.05, 0.1), nose_dark=u(0.08, 0.22),
        mouth_y=mouth_y, mouth_w=u(0.14, 0.25), lip_th=lip_th, lips=_col(lips), mouth_curve=u(-0.35, 0.35),
        beard=beard, beard_top=mouth_y - u(-0.02, 0.12), moustache=moustache,
        glasses=glasses, glasses_r=u(1.15, 1.5), glasses_th=u(0.012, 0.03),
        frame=_col(_FRAMES[rng.integers(len(_FRAMES))]),
        mole=mole, mole_u=u(0.15, 0.45) * (1 if u() < 0.5 else -1), mole_v=u(-0.05, 0.45), mole_r=u(0.012, 0.026),
    )


_NOISE: dict[int, np.ndarray] = {}


def _noise_bank(size: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise [3, 2*size, 2*size]; images take random crops of it."""
    bank = _NOISE.get(size)
    if bank is None:
        bank = np.random.default_rng([0x5EED, size]).standard_normal((3, 2 * size, 2 * size), dtype=np.float32)
        _NOISE[size] = bank
    return bank


class _Canvas:
    """A window of the image with its face coordinates (U, V, |U|) and the soft-edge width w."""

    def __init__(self, img: np.ndarray, U: np.ndarray, V: np.ndarray, AU: np.ndarray, w: float,
                 region: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        self.img, self.U, self.V, self.AU, self.w = img, U, V, AU, w
        self.region = region  # where the window lies in the full image

    def window(self, r0: int, r1: int, c0: int, c1: int) -> _Canvas:
        s = (slice(r0, r1), slice(c0, c1))
        return _Canvas(self.img[:, s[0], s[1]], self.U[s], self.V[s], self.AU[s], self.w, s)

    def cover(self, q: np.ndarray, r: float) -> np.ndarray:
        """Coverage 0..1 of the region q < 1 of an implicit shape of radius ~r (q is overwritten)."""
        k = r / (2.0 * self.w)
        q *= -k
        q += 0.5 + k
        return _clip_(q, 0.0, 1.0)

    def ellipse(self, du: np.ndarray, dv: np.ndarray, a: float, b: float) -> np.ndarray:
        """Coverage of the ellipse (du/a)^2 + (dv/b)^2 < 1.

        Round ones use q itself as the distance (cheap); elongated ones (aspect >= 2) the first-order
        distance (q - 1) / |grad q|, without which their soft edge would stretch along the long axis,
        bounded below by the distance past the end of the long axis (where the first-order estimate
        of a thin ellipse collapses to the distance from the axis line).
        """
        if max(a, b) < 2.0 * min(a, b):
            return self.cover(self.quad(du, dv, a, b), min(a, b))
        gu = du * (1.0 / a**2)
        gv = dv * (1.0 / b**2)
        q = gu * du
        q += gv * dv
        gu *= gu
        gv *= gv
        gu += gv
        np.sqrt(gu, out=gu)
        gu += 1e-6
        q -= 1.0
        q /= gu
        q *= 0.5
        beyond = np.abs(du if a >= b else dv)
        beyond -= max(a, b)
        np.maximum(q, beyond, out=q)
        return self.step(q)

    @staticmethod
    def quad(du: np.ndarray, dv: np.ndarray, a: float, b: float) -> np.ndarray:
        q = du * (1.0 / a)
        q *= q
        t = dv * (1.0 / b)
        t *= t
        q += t
        return q

    def step(self, dist: np.ndarray) -> np.ndarray:
        """Coverage of the half-space dist < 0 (dist in face units; overwritten)."""
        dist *= -1.0 / self.w
        dist += 0.5
        return _clip_(dist, 0.0, 1.0)

    def paint(self, cov: np.ndarray, col: np.ndarray) -> None:
        """Blend colour `col` ([3, 1, 1] or [3, h, w]) over the window with alpha `cov`."""
        t = col - self.img
        t *= cov
        self.img += t


def _yaw_warp(u: np.ndarray, yaw: float) -> np.ndarray:
    """Face u of the (de-rotated) image u for a head cylinder of radius R turned by `yaw` radians.

    The surface point at angle alpha shows at R sin(alpha + yaw), so u_face = R sin(beta - yaw) with
    sin(beta) = u / R. Where the surface faces away (cos(alpha) < 0: behind the far cheek) the map goes
    on monotonically past R, and outside the silhouette it continues linearly, so no point of the face
    shows twice.
    """
    R = _CYL_RADIUS
    cy, sy = math.cos(yaw), math.sin(yaw)
    sb = u * (1.0 / R)
    cb = sb * sb
    cb *= -1.0
    cb += 1.0
    np.maximum(cb, 0.0, out=cb)
    np.sqrt(cb, out=cb)
    out = sb * (R * cy)
    out -= cb * (R * sy)
    cos_a = cb * cy
    cos_a += sb * sy
    fold = cos_a < 0.0
    if fold.any():
        uu, uf = np.abs(u[fold]), np.abs(out[fold])
        mag = np.where(uu <= R, 2.0 * R - uf, R * (1.0 - cy) + uu)
        out[fold] = -math.copysign(1.0, yaw) * mag
    return out


class _Pose:
    """Maps between image coordinates (x right, y down, [-1, 1]) and face coordinates."""

    def __init__(self, rot: float, scale: float, tx: float, ty: float, yaw: float) -> None:
        self.c, self.s = math.cos(rot), math.sin(rot)
        self.scale, self.tx, self.ty = scale, tx, ty
        self.yaw = yaw

    def face_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(U, V) [S, S] for the pixel-centre row `x` [1, S] and column `y` [S, 1]."""
        k = 1.0 / self.scale
        xr, yc = x - self.tx, y - self.ty
        u = (self.c * k) * xr + (self.s * k) * yc
        v = (-self.s * k) * xr + (self.c * k) * yc
        if self.yaw:
            u = _yaw_warp(u, self.yaw)
        return u, v

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Image position of the face point (u, v) (inverse of `face_coords`)."""
        if self.yaw:
            a = math.asin(max(-1.0, min(1.0, u / _CYL_RADIUS)))
            u = _CYL_RADIUS * math.sin(a + self.yaw)
        return (self.scale * (self.c * u - self.s * v) + self.tx, self.scale * (self.s * u + self.c * v) + self.ty)


def _window(canvas: _Canvas, pose: _Pose, size: int, u0: float, u1: float, v0: float, v1: float,
            margin: float) -> _Canvas | None:
    """The sub-canvas holding the face-coordinate box [u0, u1] x [v0, v1]; None when off-image."""
    pts = [pose.to_image(u, v) for u in (u0, u1) for v in (v0, v1)]
    half = size / 2.0
    pad = 1 + margin * half
    c0 = max(0, int(math.floor((min(p[0] for p in pts) + 1) * half - pad)))
    c1 = min(size, int(math.ceil((max(p[0] for p in pts) + 1) * half + pad)))
    r0 = max(0, int(math.floor((min(p[1] for p in pts) + 1) * half - pad)))
    r1 = min(size, int(math.ceil((max(p[1] for p in pts) + 1) * half + pad)))
    if c0 >= c1 or r0 >= r1:
        return None
    return canvas.window(r0, r1, c0, c1)


class _Draw:
    """Per-image nuisance draws; always the same sequence of calls, so images are reproducible."""

    def __init__(self, rng: np.random.Generator, d: float) -> None:
        n, u = rng.standard_normal(24), rng.random(32)
        self.rot = _clamp(n[0], -2.5, 2.5) * 0.1 * d
        self.scale = math.exp(_clamp(n[1], -2.5, 2.5) * 0.06 * d)
        self.tx, self.ty = float(n[2]) * 0.04 * d, float(n[3]) * 0.04 * d
        self.yaw = _clamp(n[4] * 0.25 * d, -0.75, 0.75)
        e = min(d, 1.5)  # expressions saturate: beyond this they stop looking like faces
        self.smile = e * (1.3 * u[0] - 0.3)
        self.open = e * u[1] ** 3 * 1.2
        self.brow_raise = float(n[5]) * 0.02 * d
        self.eye_open = 0.12 if u[2] < 0.04 * d else 1.0 - 0.45 * d * u[3] ** 2
        self.gaze_x, self.gaze_y = float(n[6]) * 0.25 * d, float(n[7]) * 0.15 * d
        self.shape = 1.0 + n[8:11] * 0.02 * d  # face_w, face_h, jaw
        self.hairline = float(n[11]) * 0.04 * d
        self.hair_tilt = float(n[12]) * 0.08 * d
        self.hair_volume = float(n[13]) * 0.025 * d
        self.beard = _clamp(1.0 + n[14] * 0.25 * d, 0.3, 1.5)
        self.glasses_off = u[4] < 0.2 * d
        self.occluder = int(u[5] * 3) if u[6] < 0.1 * d else -1  # 0 mask, 1 sunglasses, 2 hand
        self.occ = u[7:14]  # position, size, colour, tone
        self.bg = u[14:17] * 195.0 + 30.0
        self.bg_mix = min(1.0, d)
        self.bg_grad = (n[15:17] * 25.0 * d).astype(np.float32)
        self.light_dir = 2.0 * math.pi * u[17]
        self.light = 0.45 * d * u[18]
        self.ambient = _clamp(1.0 + n[17] * 0.16 * d, 0.45, 1.6)
        self.cast = (1.0 + np.clip(n[18:21], -2.5, 2.5) * 0.06 * d).astype(np.float32).reshape(3, 1, 1)
        self.blur = 2.0 * d * u[19] ** 2
        self.noise = 6.0 * d * u[20]
        self.noise_at = (int(u[21] * 1e6), int(u[22] * 1e6))


def render_face(ident: FaceIdentity, rng: np.random.Generator, difficulty: float, size: int) -> np.ndarray:
    """One image of `ident` as uint8 [size, size, 3] RGB, nuisances drawn from `rng`."""
    nz = _Draw(rng, difficulty)
    pose = _Pose(nz.rot, nz.scale, nz.tx, nz.ty, nz.yaw)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0)
    x, y = grid.reshape(1, size), grid.reshape(size, 1)
    U, V = pose.face_coords(x, y)
    w = (2.0 / size) / nz.scale * (1.0 + nz.blur)
    grey = np.float32(128.0)
    bg = (grey + nz.bg_mix * (nz.bg - grey)).astype(np.float32).reshape(3, 1, 1)
    img = bg + (nz.bg_grad[0] * x + nz.bg_grad[1] * y)
    cv = _Canvas(img, U, V, np.abs(U), w)

    fw, fh, jaw = ident.face_w * nz.shape[0], ident.face_h * nz.shape[1], min(1.0, ident.jaw * nz.shape[2])
    fy = ident.face_y
    _draw_head(cv, pose, size, ident, nz, fw, fh, jaw, fy)
    _draw_features(cv, pose, size, ident, nz)
    _draw_occluder(cv, ident, nz)
    _finish(img, nz, x, y, size)
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[...] = img.transpose(1, 2, 0)
    return out


def _draw_head(cv: _Canvas, pose: _Pose, size: int, ident: FaceIdentity, nz: _Draw, fw: float, fh: float, jaw: float,
               fy: float) -> None:
    """Hair behind the head, neck, ears, the shaded face, beard, and hair in front."""
    U, V = cv.U, cv.V
    m = 2.0 * cv.w
    hair_a, hair_b = fw + max(0.0, ident.hair_volume + nz.hair_volume) + 0.03, fh * 0.92 + ident.hair_volume
    hair_shape = cv.ellipse(U, V - (fy - 0.06), hair_a, hair_b)
    above = cv.step(V - ident.hair_length)
    cv.paint(hair_shape * above, ident.hair * 0.8)

    win = _window(cv, pose, size, -0.62 * fw, 0.62 * fw, fy + 0.1, 3.0, m)
    if win is not None:
        neck = win.step(win.AU - fw * 0.62)
        neck *= win.step(fy + 0.2 - win.V)
        win.paint(neck, ident.skin * 0.82)
    ea, eb = ident.ear_size * 0.6, ident.ear_size
    for side in (-1.0, 1.0):
        eu = side * fw * 0.97
        win = _window(cv, pose, size, eu - ea, eu + ea, ident.ear_y - eb, ident.ear_y + eb, m)
        if win is not None:
            win.paint(win.ellipse(win.U - eu, win.V - ident.ear_y, ea, eb), ident.skin * 0.9)

    dv = V - fy
    t = dv * (1.0 / fh)
    _clip_(t, 0.0, 1.0)
    t *= t
    t *= jaw
    t += 1.0
    q = U * U
    q *= t
    q *= 1.0 / fw**2
    dv *= dv
    dv *= 1.0 / fh**2
    q += dv
    shade = 1.0 - q
    _clip_(shade, 0.0, 1.0)
    np.sqrt(shade, out=shade)
    shade *= 0.22
    shade += 0.78
    hs = ident.hair_side
    side_hair = cv.cover(q * (1.0 / hs**2), fw * hs)
    np.subtract(1.0, side_hair, out=side_hair)
    face = cv.cover(q, fw)
    cv.paint(face, ident.skin * shade)
    if ident.beard > 0:
        win = _window(cv, pose, size, -fw, fw, ident.beard_top - 0.02, fy + fh, m)
        if win is not None:
            beard = win.step(ident.beard_top - win.V)
            beard *= face[win.region]
            beard *= min(1.0, ident.beard * nz.beard)
            win.paint(beard, ident.hair * 0.85)

    top = cv.step(V - (ident.hairline + nz.hairline) - ident.hair_curve * U * U - (ident.hair_tilt + nz.hair_tilt) * U)
    side_hair *= above
    np.maximum(top, side_hair, out=top)
    top *= hair_shape
    cv.paint(top, ident.hair)


def _draw_features(cv: _Canvas, pose: _Pose, size: int, ident: FaceIdentity, nz: _Draw) -> None:
    """Eyes, brows, glasses, nose, moustache, mouth and mole, each inside its bounding window."""
    sy = math.sin(nz.yaw)
    m = 2.0 * cv.w
    sep, ey = ident.eye_sep, ident.eye_y
    gr = ident.eye_w * ident.glasses_r
    glasses = ident.glasses and not nz.glasses_off
    lens = gr + ident.glasses_th if glasses or nz.occluder == 1 else 0.0
    reach = sep + max(ident.eye_w, ident.brow_len + 0.01, lens) + 0.02
    top = ey - ident.brow_gap - nz.brow_raise - 0.08 - abs(ident.brow_slant) * ident.brow_len
    win = _window(cv, pose, size, -reach, reach, min(top, ey - lens), ey + max(ident.eye_h, lens) + 0.02, m)
    if win is not None:
        _draw_eyes(win, ident, nz, glasses, gr)

    nx, mx = 0.14 * sy, 0.05 * sy
    mw = ident.mouth_w * (1.0 + 0.12 * nz.smile)
    lt = ident.lip_th
    half = max(ident.nose_w * 1.2, mw, 0.12)
    win = _window(cv, pose, size, min(nx, mx) - half, max(nx, mx) + half, ey + 0.04,
                  ident.mouth_y + lt + nz.open * lt + 0.05 + abs(ident.mouth_curve + 0.45 * nz.smile) * mw, m)
    if win is not None:
        _draw_nose_mouth(win, ident, nz, nx, mx, mw)

    if ident.mole:
        r = ident.mole_r
        win = _window(cv, pose, size, ident.mole_u - r, ident.mole_u + r, ident.mole_v - r, ident.mole_v + r, m)
        if win is not None:
            win.paint(win.ellipse(win.U - ident.mole_u, win.V - ident.mole_v, r, r), ident.skin * 0.45)


def _draw_eyes(cv: _Canvas, ident: FaceIdentity, nz: _Draw, glasses: bool, gr: float) -> None:
    AU, V = cv.AU, cv.V
    sep, ey, ew = ident.eye_sep, ident.eye_y, ident.eye_w
    eh = max(ident.eye_h * nz.eye_open, 0.004)
    du = AU - sep
    dv = V - ey
    cv.paint(cv.ellipse(du, dv, ew * 1.2, eh * 1.2), ident.skin * 0.42)
    white = cv.ellipse(du, dv, ew, eh)
    cv.paint(white, _WHITE.reshape(3, 1, 1).astype(np.float32) * (ident.skin / 255.0) ** 0.25)
    gx, gy = nz.gaze_x * ew * np.sign(cv.U), nz.gaze_y * ident.eye_h
    qi = cv.quad(du - gx, dv - gy, ident.iris_r, ident.iris_r)
    iris = cv.cover(qi * 1.0, ident.iris_r)
    iris *= white
    cv.paint(iris, ident.iris)
    qi *= 1.0 / 0.45**2
    pupil = cv.cover(qi, ident.iris_r * 0.45)
    pupil *= white
    cv.paint(pupil, np.full((3, 1, 1), 15.0, dtype=np.float32))

    bl = ident.brow_len
    bdu = AU - (sep + 0.01)
    bdv = V - (ey - ident.brow_gap - nz.brow_raise)
    bdv -= ident.brow_arch * bdu * bdu
    bdv -= ident.brow_slant * bdu
    cv.paint(cv.ellipse(bdu, bdv, bl, ident.brow_th), ident.hair * 0.7)

    if glasses or nz.occluder == 1:
        rr = du * du
        rr += dv * dv
        np.sqrt(rr, out=rr)
        if nz.occluder == 1:
            lens = cv.step(rr - gr)
            lens *= 0.92
            cv.paint(lens, np.full((3, 1, 1), 12.0, dtype=np.float32))
        th = ident.glasses_th
        ring = cv.step(np.abs(rr - gr) - th)
        bridge = cv.step(np.abs(dv + 0.01) - th * 0.8)
        bridge *= cv.step(AU - (sep - gr + th))
        np.maximum(ring, bridge, out=ring)
        cv.paint(ring, ident.frame if glasses else np.full((3, 1, 1), 10.0, dtype=np.float32))


def _draw_nose_mouth(cv: _Canvas, ident: FaceIdentity, nz: _Draw, nx: float, mx: float, mw: float) -> None:
    U, V = cv.U, cv.V
    tip, nw, ey = ident.nose_tip, ident.nose_w, ident.eye_y
    length = (tip - ey) * 0.5
    body = cv.ellipse(U - nx, V - (tip - length + 0.02), nw * 0.75, length)
    body *= 0.65
    cv.paint(body, ident.skin * (1.0 - ident.nose_dark))
    cv.paint(cv.ellipse(U - nx, V - (tip - 0.015), nw * 0.55, nw * 0.42), ident.skin * 1.06)
    nostril = cv.ellipse(np.abs(U - nx) - nw * 0.5, V - (tip + 0.01), nw * 0.28, nw * 0.14)
    cv.paint(nostril, ident.skin * 0.35)

    lt = ident.lip_th
    opening = nz.open * lt
    curve = (ident.mouth_curve + 0.45 * nz.smile) / max(mw, 1e-3)
    du = U - mx
    dv = V - ident.mouth_y
    dv += curve * du * du
    if ident.moustache > 0:
        must = cv.ellipse(du, dv + (lt + 0.035), mw * 0.95, 0.03)
        must *= ident.moustache
        cv.paint(must, ident.hair * 0.85)
    cv.paint(cv.ellipse(du, dv, mw, lt + opening), ident.lips)
    cv.paint(cv.ellipse(du, dv, mw * 0.88, 0.1 * lt + 0.9 * opening),
             np.array([70, 25, 30], np.float32).reshape(3, 1, 1))


def _draw_occluder(cv: _Canvas, ident: FaceIdentity, nz: _Draw) -> None:
    """A face mask over nose and mouth, or a hand-like blob (sunglasses are drawn with the eyes)."""
    o = nz.occ
    col = _col(o[3:6] * 200.0 + 40.0)
    if nz.occluder == 0:
        cover = cv.step(ident.nose_tip - 0.05 - o[0] * 0.1 - cv.V)
        cover *= cv.step(cv.AU - ident.face_w * 1.02)
        cv.paint(cover, col)
    elif nz.occluder == 2:
        cu, cvv = (o[0] - 0.5) * 1.2, (o[1] - 0.3) * 1.2
        blob = cv.ellipse(cv.U - cu, cv.V - cvv, 0.2 + 0.2 * o[2], 0.35)
        cv.paint(blob, ident.skin * (0.85 + 0.3 * float(o[6])))


def _blur_pass(img: np.ndarray, forward: bool) -> None:
    """Add each pixel's neighbour along rows, then columns (a 2-tap box, gain 4: the caller rescales).

    Passes alternate direction so that two of them make the centred [1, 2, 1] kernel.
    """
    if forward:
        img[:, 1:, :] += img[:, :-1, :]
        img[:, 0, :] *= 2.0
        img[:, :, 1:] += img[:, :, :-1]
        img[:, :, 0] *= 2.0
    else:
        img[:, :-1, :] += img[:, 1:, :]
        img[:, -1, :] *= 2.0
        img[:, :, :-1] += img[:, :, 1:]
        img[:, :, -1] *= 2.0


def _finish(img: np.ndarray, nz: _Draw, x: np.ndarray, y: np.ndarray, size: int) -> None:
    """Lighting gradient and colour cast, defocus, sensor noise; clip to 0..255 (in place)."""
    passes = min(3, int(nz.blur))
    for p in range(passes):
        _blur_pass(img, forward=p % 2 == 0)
    gain = (nz.light * math.cos(nz.light_dir)) * x + (nz.light * math.sin(nz.light_dir)) * y
    gain += nz.ambient
    img *= gain * (nz.cast * 0.25**passes)
    if nz.noise > 0:
        bank = _noise_bank(size)
        oy, ox = nz.noise_at[0] % size, nz.noise_at[1] % size
        img += nz.noise * bank[:, oy:oy + size, ox:ox + size]
    _clip_(img, 0.0, 255.0)
