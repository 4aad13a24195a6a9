//! Camera trajectories as in TALLO: random smooth walks towards a grapple fixture (train/val)
//! and deterministic 60-degree arcs of radius 5 m around it (test), and the look-at rotation.
use std::fmt;

use nalgebra::{Point3, Rotation3, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Longest step of a walk between two frames (TALLO: 0.4 m).
pub const MAX_STEP: f64 = 0.4;
/// Radius of the test arcs around the fixture (TALLO: 5 m).
pub const ARC_RADIUS: f64 = 5.0;
/// Angle an arc sweeps over the whole sequence (TALLO: 60 degrees).
pub const ARC_SPAN_DEG: f64 = 60.0;
/// Walks stop approaching the fixture at this distance.
const MIN_DISTANCE: f64 = 2.5;

/// How a sequence's camera moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trajectory {
    /// Random smooth walk biased toward the fixture.
    Walk,
    /// Arc around the fixture, the camera moving to its left, right, up or down.
    Arc(ArcDirection),
}

/// Direction of a test arc, as seen by the camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArcDirection {
    Left,
    Right,
    Up,
    Down,
}

impl ArcDirection {
    /// All four, in the order test sequences cycle through them.
    pub const ALL: [ArcDirection; 4] = [Self::Left, Self::Right, Self::Up, Self::Down];
}

impl fmt::Display for Trajectory {
    /// `walk`, `arc_left`, `arc_right`, `arc_up`, `arc_down` (the names in `meta.json`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trajectory::Walk => "walk",
            Trajectory::Arc(ArcDirection::Left) => "arc_left",
            Trajectory::Arc(ArcDirection::Right) => "arc_right",
            Trajectory::Arc(ArcDirection::Up) => "arc_up",
            Trajectory::Arc(ArcDirection::Down) => "arc_down",
        })
    }
}

/// The up direction used for a camera looking along `forward`: world z, unless the camera
/// looks nearly straight up or down, then world x.
pub fn up_hint(forward: &Vector3<f64>) -> Vector3<f64> {
    if forward.normalize().z.abs() > 0.9 {
        Vector3::x()
    } else {
        Vector3::z()
    }
}

/// Camera-to-world rotation of a camera at `eye` looking at `target` (OpenCV axes: z forward,
/// x right, y down, `up` pointing to the top of the image).
pub fn look_at(eye: &Point3<f64>, target: &Point3<f64>, up: &Vector3<f64>) -> Rotation3<f64> {
    let z = (target - eye).normalize();
    let x = z.cross(up).normalize();
    let y = z.cross(&x);
    Rotation3::from_basis_unchecked(&[x, y, z])
}

/// Positions of an arc around `centre` starting at `start` (its radius is `|start - centre|`),
/// sweeping [`ARC_SPAN_DEG`] over `frames` frames in `direction` as seen from a camera at
/// `start` looking at `centre` with `up`.
pub fn arc(
    centre: &Point3<f64>,
    start: &Point3<f64>,
    up: &Vector3<f64>,
    direction: ArcDirection,
    frames: usize,
) -> Vec<Point3<f64>> {
    let offset = start - centre;
    let radius = offset.norm();
    let s = offset / radius;
    let forward = -s;
    let right = forward.cross(up).normalize();
    let up_perp = right.cross(&forward);
    let tangent = match direction {
        ArcDirection::Left => -right,
        ArcDirection::Right => right,
        ArcDirection::Up => up_perp,
        ArcDirection::Down => -up_perp,
    };
    let span = ARC_SPAN_DEG.to_radians();
    (0..frames)
        .map(|k| {
            let a = span * k as f64 / (frames.max(2) - 1) as f64;
            centre + (s * a.cos() + tangent * a.sin()) * radius
        })
        .collect()
}

/// A standard normal sample (Box-Muller, our own: no distribution crate's choice of
/// algorithm can change the numbers; `rand` and `rand_chacha` are pinned by Cargo.lock).
pub fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A random smooth walk of `frames` positions from `start` drifting toward `target`: each step
/// mixes the previous step (momentum), a pull toward the target and Gaussian noise, is at most
/// [`MAX_STEP`] long, and is redrawn (up to a few times, else the camera holds still) when
/// `free(from, to)` says it would pass through the station.
pub fn walk(
    start: &Point3<f64>,
    target: &Point3<f64>,
    frames: usize,
    rng: &mut ChaCha8Rng,
    free: impl Fn(&Point3<f64>, &Point3<f64>) -> bool,
) -> Vec<Point3<f64>> {
    let mut positions = vec![*start];
    let mut step = Vector3::zeros();
    let mut p = *start;
    while positions.len() < frames {
        let to = target - p;
        let pull = to.normalize() * 0.2 * ((to.norm() - MIN_DISTANCE) / 3.0).clamp(-1.0, 1.0);
        let mut next = p;
        for _ in 0..8 {
            let noise = Vector3::new(gaussian(rng), gaussian(rng), gaussian(rng)) * 0.08;
            let mut s = step * 0.6 + pull * 0.4 + noise;
            if s.norm() > MAX_STEP {
                s *= MAX_STEP / s.norm();
            }
            if free(&p, &(p + s)) {
                step = s;
                next = p + s;
                break;
            }
            step = Vector3::zeros();
        }
        positions.push(next);
        p = next;
    }
    positions
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn look_at_points_z_at_target_with_image_up_toward_up() {
        let eye = Point3::new(4.0, -3.0, 1.0);
        let target = Point3::new(0.0, 1.0, 0.5);
        let r = look_at(&eye, &target, &Vector3::z());
        let z = r * Vector3::z();
        assert!((z - (target - eye).normalize()).norm() < 1e-12);
        // Image y points down, so world up projects onto -y.
        assert!((r * Vector3::y()).dot(&Vector3::z()) < 0.0);
        assert!((r.matrix().determinant() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn arcs_keep_radius_span_sixty_degrees_and_go_their_way() {
        let c = Point3::new(1.0, 2.0, 3.0);
        let start = c + Vector3::new(5.0, 0.0, 0.0);
        let up = Vector3::z();
        for dir in ArcDirection::ALL {
            let ps = arc(&c, &start, &up, dir, 10);
            assert_eq!(ps.len(), 10);
            for p in &ps {
                assert!(((p - c).norm() - 5.0).abs() < 1e-9);
            }
            let (a, b) = ((ps[0] - c).normalize(), (ps[9] - c).normalize());
            assert!((a.dot(&b).acos().to_degrees() - 60.0).abs() < 1e-9);
            // Camera at +x looking at -x with z up: its right is +y... in world terms -x cross z = +y.
            let moved = ps[9] - ps[0];
            match dir {
                ArcDirection::Right => assert!(moved.y > 0.0),
                ArcDirection::Left => assert!(moved.y < 0.0),
                ArcDirection::Up => assert!(moved.z > 0.0),
                ArcDirection::Down => assert!(moved.z < 0.0),
            }
        }
    }

    #[test]
    fn walks_are_short_stepped_and_approach_the_target() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let target = Point3::origin();
        let start = Point3::new(8.0, 1.0, 0.0);
        let ps = walk(&start, &target, 10, &mut rng, |_, _| true);
        assert_eq!(ps.len(), 10);
        for w in ps.windows(2) {
            assert!((w[1] - w[0]).norm() <= MAX_STEP + 1e-12);
        }
        assert!((ps[9] - target).norm() < (start - target).norm());
        // A wall everywhere: the camera holds still rather than passing through it.
        let still = walk(&start, &target, 5, &mut rng, |_, _| false);
        assert!(still.iter().all(|p| *p == start));
    }

    #[test]
    fn gaussian_has_unit_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let xs: Vec<f64> = (0..20_000).map(|_| gaussian(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
