//! Ray-shape intersection and a bounding-volume hierarchy over a scene's objects.
//!
//! Shapes are intersected in their local frame (the pose is rigid, so the ray parameter `t`
//! is the same in both frames). Every test returns the nearest hit with `t > T_MIN`.
use std::cell::Cell;

use nalgebra::{Point3, Vector3};

use super::scene::{Object, Scene, Shape};

/// Hits closer than this are ignored (avoids self-intersection of shadow rays).
const T_MIN: f64 = 1e-6;

/// A ray `origin + t * dir`, `dir` of unit length.
#[derive(Clone, Copy, Debug)]
pub struct Ray {
    pub origin: Point3<f64>,
    pub dir: Vector3<f64>,
}

/// What a ray hit first.
#[derive(Clone, Copy, Debug)]
pub enum Hit {
    /// Object `index` of the scene, at distance `t`, with the local hit point and the outward
    /// world normal.
    Object {
        index: usize,
        t: f64,
        local: Point3<f64>,
        normal: Vector3<f64>,
    },
    /// The Earth, at distance `t`, with its outward normal.
    Earth { t: f64, normal: Vector3<f64> },
}

/// An axis-aligned bounding box.
#[derive(Clone, Copy, Debug)]
pub struct Aabb {
    pub min: Point3<f64>,
    pub max: Point3<f64>,
}

impl Aabb {
    /// The box that contains nothing (the identity of [`Aabb::grow`]).
    pub fn empty() -> Self {
        Self {
            min: Point3::from(Vector3::repeat(f64::INFINITY)),
            max: Point3::from(Vector3::repeat(f64::NEG_INFINITY)),
        }
    }

    /// Extends the box to contain `p`.
    pub fn grow(&mut self, p: &Point3<f64>) {
        self.min = self.min.inf(p);
        self.max = self.max.sup(p);
    }

    /// The smallest box containing both.
    pub fn union(&self, other: &Aabb) -> Aabb {
        Aabb {
            min: self.min.inf(&other.min),
            max: self.max.sup(&other.max),
        }
    }

    /// Whether `p` lies inside or on the box.
    pub fn contains(&self, p: &Point3<f64>) -> bool {
        (0..3).all(|i| self.min[i] <= p[i] && p[i] <= self.max[i])
    }

    fn centre(&self) -> Point3<f64> {
        nalgebra::center(&self.min, &self.max)
    }

    /// Whether the ray enters the box before `t_max` (slab test with a precomputed `1/dir`).
    fn hit(&self, origin: &Point3<f64>, inv_dir: &Vector3<f64>, t_max: f64) -> bool {
        let (mut lo, mut hi) = (T_MIN, t_max);
        for i in 0..3 {
            let a = (self.min[i] - origin[i]) * inv_dir[i];
            let b = (self.max[i] - origin[i]) * inv_dir[i];
            lo = lo.max(a.min(b));
            hi = hi.min(a.max(b));
        }
        lo <= hi
    }
}

/// A bounding-volume hierarchy (median split on the longest axis), flattened in depth-first
/// order with skip links, so traversal needs no stack: on a miss, jump past the subtree.
#[derive(Clone, Debug)]
pub struct Bvh {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
struct Node {
    bounds: Aabb,
    /// Objects of a leaf; empty for an inner node (whose children follow it).
    items: Vec<usize>,
    /// Index of the first node after this node's subtree.
    skip: usize,
}

const LEAF_SIZE: usize = 2;

impl Bvh {
    /// Builds the hierarchy over the objects' boxes (deterministic: ties keep index order).
    pub fn build(boxes: &[Aabb]) -> Self {
        let mut bvh = Self { nodes: Vec::new() };
        if !boxes.is_empty() {
            bvh.split(boxes, (0..boxes.len()).collect());
        }
        bvh
    }

    fn split(&mut self, boxes: &[Aabb], mut items: Vec<usize>) {
        let bounds = items.iter().fold(Aabb::empty(), |b, &i| b.union(&boxes[i]));
        let at = self.nodes.len();
        self.nodes.push(Node {
            bounds,
            items: Vec::new(),
            skip: 0,
        });
        if items.len() <= LEAF_SIZE {
            self.nodes[at].items = items;
        } else {
            let axis = (bounds.max - bounds.min).imax();
            items.sort_by(|&a, &b| boxes[a].centre()[axis].total_cmp(&boxes[b].centre()[axis]));
            let right = items.split_off(items.len() / 2);
            self.split(boxes, items);
            self.split(boxes, right);
        }
        self.nodes[at].skip = self.nodes.len();
    }

    /// Calls `visit(object)` for every object whose leaf box the ray enters before `t_max()`;
    /// `visit` returns `false` to stop early.
    fn traverse(&self, ray: &Ray, t_max: impl Fn() -> f64, mut visit: impl FnMut(usize) -> bool) {
        let inv = ray.dir.map(|d| 1.0 / d);
        let mut i = 0;
        while i < self.nodes.len() {
            let node = &self.nodes[i];
            if !node.bounds.hit(&ray.origin, &inv, t_max()) {
                i = node.skip;
                continue;
            }
            for &item in &node.items {
                if !visit(item) {
                    return;
                }
            }
            i += 1;
        }
    }
}

/// The nearest hit found so far (cells, so the BVH's bound and its visitor can share it).
struct Nearest {
    t: Cell<f64>,
    hit: Cell<Option<Hit>>,
}

impl Nearest {
    fn new() -> Self {
        Self {
            t: Cell::new(f64::INFINITY),
            hit: Cell::new(None),
        }
    }

    fn offer(&self, scene: &Scene, index: usize, ray: &Ray) {
        if let Some((t, local, normal)) = intersect_object(&scene.objects[index], ray) {
            if t < self.t.get() {
                self.t.set(t);
                self.hit.set(Some(Hit::Object {
                    index,
                    t,
                    local,
                    normal,
                }));
            }
        }
    }

    /// The nearest hit once the Earth had its chance.
    fn finish(self, scene: &Scene, ray: &Ray) -> Option<Hit> {
        if let Some(earth) = &scene.earth {
            if let Some(t) = sphere(&(ray.origin - earth.centre), &ray.dir, earth.radius) {
                if t < self.t.get() {
                    let normal = (ray.origin + ray.dir * t - earth.centre).normalize();
                    return Some(Hit::Earth { t, normal });
                }
            }
        }
        self.hit.get()
    }
}

impl Scene {
    /// The nearest hit of the ray, station objects and Earth alike.
    pub fn intersect(&self, ray: &Ray) -> Option<Hit> {
        let nearest = Nearest::new();
        self.bvh.traverse(
            ray,
            || nearest.t.get(),
            |i| {
                nearest.offer(self, i, ray);
                true
            },
        );
        nearest.finish(self, ray)
    }

    /// Like [`Scene::intersect`], but trying only `candidates`: `(object, t_min)` pairs that
    /// must include every object the ray can hit, sorted by `t_min`, a lower bound on the
    /// distance at which the ray can meet that object. Stops at the first candidate that
    /// cannot beat the nearest hit so far.
    pub fn intersect_among(
        &self,
        ray: &Ray,
        candidates: impl IntoIterator<Item = (usize, f64)>,
    ) -> Option<Hit> {
        let nearest = Nearest::new();
        for (i, t_min) in candidates {
            if t_min >= nearest.t.get() {
                break;
            }
            nearest.offer(self, i, ray);
        }
        nearest.finish(self, ray)
    }

    /// Whether any station object blocks the ray before `t_max` (shadow and visibility rays;
    /// the Earth never shadows: the sun is always above the station's horizon here).
    pub fn occluded(&self, ray: &Ray, t_max: f64) -> bool {
        let mut blocked = false;
        self.bvh.traverse(
            ray,
            || t_max,
            |i| {
                blocked = intersect_object(&self.objects[i], ray).is_some_and(|h| h.0 < t_max);
                !blocked
            },
        );
        blocked
    }
}

/// Nearest hit of a ray with one object: `(t, local point, world normal)`.
pub fn intersect_object(obj: &Object, ray: &Ray) -> Option<(f64, Point3<f64>, Vector3<f64>)> {
    let o = obj.pose.inverse_transform_point(&ray.origin);
    let d = obj.pose.inverse_transform_vector(&ray.dir);
    let (t, n) = intersect_shape(&obj.shape, &o, &d)?;
    Some((t, o + d * t, obj.pose.transform_vector(&n)))
}

/// Nearest hit `(t, local outward normal)` of the local ray `o + t d` with a shape.
pub fn intersect_shape(
    shape: &Shape,
    o: &Point3<f64>,
    d: &Vector3<f64>,
) -> Option<(f64, Vector3<f64>)> {
    match shape {
        Shape::Sphere { radius } => {
            let t = sphere(&o.coords, d, *radius)?;
            Some((t, (o + d * t).coords / *radius))
        }
        Shape::Ellipsoid { radii } => {
            // Scale space so the ellipsoid is the unit sphere; t is unchanged by the scaling.
            let os = o.coords.component_div(radii);
            let ds = d.component_div(radii);
            let t = quadric(ds.norm_squared(), os.dot(&ds), os.norm_squared() - 1.0)?;
            let p = o + d * t;
            Some((
                t,
                p.coords
                    .component_div(&radii.component_mul(radii))
                    .normalize(),
            ))
        }
        Shape::Cuboid { half } => cuboid(o, d, half),
        Shape::Cylinder {
            radius,
            half_length,
        } => cylinder(o, d, *radius, *half_length),
        Shape::Capsule {
            radius,
            half_length,
        } => capsule(o, d, *radius, *half_length),
        Shape::Polyhedron { planes, .. } => polyhedron(o, d, planes),
    }
}

/// Smallest root `t > T_MIN` of `a t^2 + 2 b t + c = 0`.
fn quadric(a: f64, b: f64, c: f64) -> Option<f64> {
    let disc = b * b - a * c;
    if disc < 0.0 || a == 0.0 {
        return None;
    }
    let s = disc.sqrt();
    // The numerically stable pair of roots (no cancellation between b and s).
    let q = -(b + b.signum() * s);
    let (r1, r2) = if q == 0.0 { (0.0, 0.0) } else { (q / a, c / q) };
    let (near, far) = (r1.min(r2), r1.max(r2));
    [near, far].into_iter().find(|&t| t > T_MIN)
}

/// Ray from `o` (relative to the centre) against a sphere of radius `r`; `d` is unit length.
fn sphere(o: &Vector3<f64>, d: &Vector3<f64>, r: f64) -> Option<f64> {
    quadric(d.norm_squared(), o.dot(d), o.norm_squared() - r * r)
}

fn cuboid(o: &Point3<f64>, d: &Vector3<f64>, half: &Vector3<f64>) -> Option<(f64, Vector3<f64>)> {
    let (mut t_in, mut t_out) = (f64::NEG_INFINITY, f64::INFINITY);
    let (mut ax_in, mut ax_out) = (0, 0);
    for i in 0..3 {
        if d[i] == 0.0 {
            if o[i].abs() > half[i] {
                return None;
            }
            continue;
        }
        let a = (-half[i] - o[i]) / d[i];
        let b = (half[i] - o[i]) / d[i];
        let (near, far) = (a.min(b), a.max(b));
        if near > t_in {
            t_in = near;
            ax_in = i;
        }
        if far < t_out {
            t_out = far;
            ax_out = i;
        }
    }
    if t_in > t_out || t_out <= T_MIN {
        return None;
    }
    // From outside the entry face is hit; from inside (a thin sheet grazed by a shadow ray), the exit.
    let (t, axis) = if t_in > T_MIN {
        (t_in, ax_in)
    } else {
        (t_out, ax_out)
    };
    let mut n = Vector3::zeros();
    n[axis] = (o[axis] + d[axis] * t).signum();
    Some((t, n))
}

fn cylinder(o: &Point3<f64>, d: &Vector3<f64>, r: f64, h: f64) -> Option<(f64, Vector3<f64>)> {
    let mut best: Option<(f64, Vector3<f64>)> = None;
    let mut offer = |t: f64, n: Vector3<f64>| {
        if t > T_MIN && best.is_none_or(|b| t < b.0) {
            best = Some((t, n));
        }
    };
    // Side: the infinite cylinder x^2 + y^2 = r^2, both roots, kept where |z| <= h.
    let a = d.x * d.x + d.y * d.y;
    if a > 0.0 {
        let b = o.x * d.x + o.y * d.y;
        let c = o.x * o.x + o.y * o.y - r * r;
        let disc = b * b - a * c;
        if disc >= 0.0 {
            let s = disc.sqrt();
            for t in [(-b - s) / a, (-b + s) / a] {
                let p = o + d * t;
                if p.z.abs() <= h {
                    offer(t, Vector3::new(p.x / r, p.y / r, 0.0));
                }
            }
        }
    }
    // Caps.
    if d.z != 0.0 {
        for z in [-h, h] {
            let t = (z - o.z) / d.z;
            let p = o + d * t;
            if p.x * p.x + p.y * p.y <= r * r {
                offer(t, Vector3::new(0.0, 0.0, z.signum()));
            }
        }
    }
    best
}

fn capsule(o: &Point3<f64>, d: &Vector3<f64>, r: f64, h: f64) -> Option<(f64, Vector3<f64>)> {
    let mut best: Option<(f64, Vector3<f64>)> = None;
    if let Some((t, n)) = cylinder(o, d, r, h) {
        if n.z == 0.0 {
            best = Some((t, n));
        }
    }
    for z in [-h, h] {
        let c = Vector3::new(0.0, 0.0, z);
        if let Some(t) = sphere(&(o.coords - c), d, r) {
            let p = o + d * t;
            // Only the outer hemisphere belongs to the capsule's surface.
            if (p.z - z) * z.signum() >= 0.0 && best.is_none_or(|b| t < b.0) {
                best = Some((t, (p.coords - c) / r));
            }
        }
    }
    best
}

fn polyhedron(
    o: &Point3<f64>,
    d: &Vector3<f64>,
    planes: &[(Vector3<f64>, f64)],
) -> Option<(f64, Vector3<f64>)> {
    let (mut t_in, mut t_out) = (f64::NEG_INFINITY, f64::INFINITY);
    let (mut n_in, mut n_out) = (Vector3::zeros(), Vector3::zeros());
    for (n, offset) in planes {
        let denom = n.dot(d);
        let dist = offset - n.dot(&o.coords);
        if denom == 0.0 {
            if dist < 0.0 {
                return None;
            }
            continue;
        }
        let t = dist / denom;
        if denom < 0.0 {
            if t > t_in {
                t_in = t;
                n_in = *n;
            }
        } else if t < t_out {
            t_out = t;
            n_out = *n;
        }
    }
    if t_in > t_out || t_out <= T_MIN {
        return None;
    }
    if t_in > T_MIN {
        Some((t_in, n_in))
    } else {
        Some((t_out, n_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ray_z(x: f64, y: f64) -> (Point3<f64>, Vector3<f64>) {
        (Point3::new(x, y, -10.0), Vector3::z())
    }

    #[test]
    fn sphere_hit_distance_and_normal() {
        let (o, d) = ray_z(0.0, 0.0);
        let (t, n) = intersect_shape(&Shape::Sphere { radius: 2.0 }, &o, &d).unwrap();
        assert!((t - 8.0).abs() < 1e-12);
        assert!((n - Vector3::new(0.0, 0.0, -1.0)).norm() < 1e-12);
        let (o, d) = ray_z(2.01, 0.0);
        assert!(intersect_shape(&Shape::Sphere { radius: 2.0 }, &o, &d).is_none());
    }

    #[test]
    fn every_shape_agrees_with_its_inside_test_along_a_ray() {
        // March along rays and compare the first hit with the first sample that is inside.
        type Inside = Box<dyn Fn(&Point3<f64>) -> bool>;
        let shapes: Vec<(Shape, Inside)> = vec![
            (
                Shape::Ellipsoid {
                    radii: Vector3::new(1.0, 0.5, 2.0),
                },
                Box::new(|p| (p.x).powi(2) + (p.y / 0.5).powi(2) + (p.z / 2.0).powi(2) <= 1.0),
            ),
            (
                Shape::Cuboid {
                    half: Vector3::new(1.0, 0.5, 2.0),
                },
                Box::new(|p| p.x.abs() <= 1.0 && p.y.abs() <= 0.5 && p.z.abs() <= 2.0),
            ),
            (
                Shape::Cylinder {
                    radius: 0.8,
                    half_length: 1.5,
                },
                Box::new(|p| p.x * p.x + p.y * p.y <= 0.64 && p.z.abs() <= 1.5),
            ),
            (
                Shape::Capsule {
                    radius: 0.5,
                    half_length: 1.0,
                },
                Box::new(|p| {
                    let z = p.z.clamp(-1.0, 1.0);
                    p.x * p.x + p.y * p.y + (p.z - z).powi(2) <= 0.25
                }),
            ),
            (
                Shape::Polyhedron {
                    planes: vec![
                        (Vector3::x(), 1.0),
                        (-Vector3::x(), 1.0),
                        (Vector3::y(), 1.0),
                        (-Vector3::y(), 1.0),
                        (Vector3::z(), 1.0),
                        (-Vector3::z(), 1.0),
                        (Vector3::new(1.0, 1.0, 1.0).normalize(), 1.2),
                    ],
                    bound: Vector3::repeat(1.0),
                },
                Box::new(|p| {
                    p.x.abs() <= 1.0
                        && p.y.abs() <= 1.0
                        && p.z.abs() <= 1.0
                        && (p.x + p.y + p.z) / 3f64.sqrt() <= 1.2
                }),
            ),
        ];
        let step = 1e-3;
        for (k, (shape, inside)) in shapes.iter().enumerate() {
            for i in 0..40 {
                let a = i as f64 * 0.7;
                let o = Point3::new(5.0 * a.cos(), 5.0 * a.sin(), 0.3 * (i as f64 - 20.0) / 10.0);
                let target = Point3::new(0.1 * a.sin(), -0.2 * a.cos(), 0.05 * i as f64 - 1.0);
                let d = (target - o).normalize();
                let marched = (0..20_000)
                    .map(|s| s as f64 * step)
                    .find(|&t| inside(&(o + d * t)));
                let hit = intersect_shape(shape, &o, &d);
                match (marched, hit) {
                    (Some(tm), Some((t, n))) => {
                        assert!(
                            (tm - t).abs() <= 2.0 * step,
                            "shape {k} ray {i}: {tm} vs {t}"
                        );
                        assert!(n.dot(&d) < 0.0, "shape {k} ray {i}: normal faces away");
                    }
                    (None, None) => {}
                    other => panic!("shape {k} ray {i}: marched/hit disagree {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bvh_finds_the_same_nearest_hit_as_brute_force() {
        use super::super::scene::{Material, Texture};
        use nalgebra::IsometryMatrix3;
        let objects: Vec<Object> = (0..30)
            .map(|i| Object {
                shape: Shape::Sphere {
                    radius: 0.3 + 0.02 * i as f64,
                },
                pose: IsometryMatrix3::translation(
                    (i % 5) as f64 * 1.1 - 2.0,
                    (i / 5) as f64 * 0.9 - 2.5,
                    4.0 + (i % 3) as f64,
                ),
                material: Material::new([0.5; 3], Texture::Plain),
                label: 2,
            })
            .collect();
        let scene = Scene::new(objects, None);
        for i in 0..400 {
            let u = (i % 20) as f64 / 10.0 - 1.0;
            let v = (i / 20) as f64 / 10.0 - 1.0;
            let ray = Ray {
                origin: Point3::origin(),
                dir: Vector3::new(u, v, 1.0).normalize(),
            };
            let brute = scene
                .objects
                .iter()
                .enumerate()
                .filter_map(|(k, o)| intersect_object(o, &ray).map(|h| (k, h.0)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let got = scene.intersect(&ray).map(|h| match h {
                Hit::Object { index, t, .. } => (index, t),
                Hit::Earth { .. } => unreachable!(),
            });
            assert_eq!(brute, got, "ray {i}");
            assert_eq!(scene.occluded(&ray, f64::INFINITY), brute.is_some());
        }
    }
}
