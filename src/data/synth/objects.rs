//! Things that do not belong on the station: the anomaly classes (blanket, cable, tool,
//! satellite; mask id 9) and the hard-negative shapes (random convex solids; mask id 10).
//!
//! The two families share no shape generator, so a test anomaly is never a hard-negative shape.
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use nalgebra::{IsometryMatrix3, Point3, Rotation3, Translation3, Unit, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::scene::{ids, Material, Object, Shape, Texture};
use super::station::z_onto;

/// The anomaly classes of TALLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyClass {
    /// A loose thermal blanket: a thin crinkled foil sheet lifting off the hull.
    Blanket,
    /// A loose cable: a chain of thin capsules along a curve.
    Cable,
    /// A hand tool drifting near the hull: a box head on a cylinder grip.
    Tool,
    /// A small satellite: a foil-covered box with two solar panels and an antenna.
    Satellite,
}

impl AnomalyClass {
    /// Every class, in the order sequences cycle through them.
    pub const ALL: [AnomalyClass; 4] = [Self::Blanket, Self::Cable, Self::Tool, Self::Satellite];

    /// The name written to `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blanket => "blanket",
            Self::Cable => "cable",
            Self::Tool => "tool",
            Self::Satellite => "satellite",
        }
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnomalyClass {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown anomaly class {s:?}"))
    }
}

/// The hard-negative shape families (ShapeNet stand-ins: plain convex solids).
pub const HARD_NEGATIVE_SHAPES: [&str; 3] = ["box", "ellipsoid", "polyhedron"];

/// A group of objects placed together, with its centre and bounding radius.
#[derive(Clone, Debug)]
pub struct Placed {
    pub objects: Vec<Object>,
    pub centre: Point3<f64>,
    pub radius: f64,
}

impl Placed {
    /// The group enlarged `k` times about `pivot` (its surface anchor, so an object resting on
    /// the hull still rests on it): every shape, offset and the bounding radius scale by `k`.
    pub fn scaled_about(self, pivot: &Point3<f64>, k: f64) -> Placed {
        let grow = |p: &Point3<f64>| pivot + (p - pivot) * k;
        let objects = self
            .objects
            .into_iter()
            .map(|o| {
                let origin = grow(&Point3::from(o.pose.translation.vector));
                Object {
                    shape: o.shape.scaled(k),
                    pose: IsometryMatrix3::from_parts(
                        Translation3::from(origin.coords),
                        o.pose.rotation,
                    ),
                    ..o
                }
            })
            .collect();
        Placed {
            objects,
            centre: grow(&self.centre),
            radius: self.radius * k,
        }
    }
}

fn object(
    shape: Shape,
    frame: &IsometryMatrix3<f64>,
    local: IsometryMatrix3<f64>,
    material: Material,
    label: u8,
) -> Object {
    Object {
        shape,
        pose: frame * local,
        material,
        label,
    }
}

fn at(x: f64, y: f64, z: f64) -> IsometryMatrix3<f64> {
    IsometryMatrix3::translation(x, y, z)
}

fn random_rotation(rng: &mut ChaCha8Rng) -> Rotation3<f64> {
    let axis = Unit::new_normalize(Vector3::new(
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0) + 1e-3,
    ));
    Rotation3::from_axis_angle(&axis, rng.random_range(0.0..2.0 * PI))
}

/// Builds an anomaly resting on (blanket, cable) or floating near (tool, satellite) a surface
/// point `anchor` with outward `normal`. All its objects get mask id 9.
pub fn anomaly(
    class: AnomalyClass,
    anchor: &Point3<f64>,
    normal: &Unit<Vector3<f64>>,
    rng: &mut ChaCha8Rng,
) -> Placed {
    let n = normal.into_inner();
    // A frame with z along the normal and a random twist about it.
    let twist = Rotation3::from_axis_angle(normal, rng.random_range(0.0..2.0 * PI));
    let surface = twist * z_onto(&n);
    let id = ids::ANOMALY;
    match class {
        AnomalyClass::Blanket => {
            let (w, h) = (rng.random_range(0.35..0.7), rng.random_range(0.25..0.5));
            // Lifted and tilted off the hull, as a blanket that came loose.
            let lift = rng.random_range(0.05..0.25);
            let tilt = Rotation3::from_axis_angle(&Vector3::x_axis(), rng.random_range(0.15..0.5));
            let centre = anchor + n * (lift + 0.05);
            let frame =
                IsometryMatrix3::from_parts(Translation3::from(centre.coords), surface * tilt);
            let gold = rng.random_bool(0.5);
            let albedo = if gold {
                [0.85, 0.62, 0.22]
            } else {
                [0.80, 0.80, 0.82]
            };
            let mat = Material::new(albedo, Texture::Foil)
                .shiny(0.9, 60.0)
                .glinting(1.0);
            Placed {
                objects: vec![object(
                    Shape::Cuboid {
                        half: Vector3::new(w, h, 0.012),
                    },
                    &frame,
                    IsometryMatrix3::identity(),
                    mat,
                    id,
                )],
                centre,
                radius: (w * w + h * h).sqrt(),
            }
        }
        AnomalyClass::Cable => {
            // A planar curve a little above the hull: a half-length L sine wiggle.
            let half = rng.random_range(0.6..1.1);
            let amp = rng.random_range(0.1..0.3);
            let radius = rng.random_range(0.03..0.05);
            let lift = rng.random_range(0.15..0.4);
            let centre = anchor + n * lift;
            let frame = IsometryMatrix3::from_parts(Translation3::from(centre.coords), surface);
            let colour =
                [[0.05, 0.05, 0.05], [0.9, 0.45, 0.1], [0.85, 0.85, 0.8]][rng.random_range(0..3)];
            let mat = Material::new(colour, Texture::Bands).shiny(0.4, 40.0);
            let phase = rng.random_range(0.0..PI);
            let curve = |s: f64| {
                Point3::new(
                    s * half,
                    amp * (PI * s + phase).sin() - amp * phase.sin(),
                    0.15 * s * s,
                )
            };
            let links = 16;
            let objects = (0..links)
                .map(|k| {
                    let a = curve(-1.0 + 2.0 * k as f64 / links as f64);
                    let b = curve(-1.0 + 2.0 * (k + 1) as f64 / links as f64);
                    let local = IsometryMatrix3::from_parts(
                        Translation3::from(nalgebra::center(&a, &b).coords),
                        z_onto(&(b - a)),
                    );
                    let shape = Shape::Capsule {
                        radius,
                        half_length: (b - a).norm() / 2.0,
                    };
                    object(shape, &frame, local, mat, id)
                })
                .collect();
            // The curve passes through its local origin (s = 0), so the centre lies on the cable.
            Placed {
                objects,
                centre,
                radius: half + amp + 0.15,
            }
        }
        AnomalyClass::Tool => {
            let len = rng.random_range(0.25..0.4);
            let centre = anchor + n * rng.random_range(0.3..0.9);
            let frame = IsometryMatrix3::from_parts(
                Translation3::from(centre.coords),
                random_rotation(rng),
            );
            let grip = Material::new([0.9, 0.7, 0.05], Texture::Bands).shiny(0.3, 30.0);
            let steel = Material::new([0.6, 0.6, 0.62], Texture::Plain)
                .shiny(0.9, 150.0)
                .glinting(0.5);
            let objects = vec![
                object(
                    Shape::Cylinder {
                        radius: 0.035,
                        half_length: len / 2.0,
                    },
                    &frame,
                    IsometryMatrix3::identity(),
                    grip,
                    id,
                ),
                object(
                    Shape::Cuboid {
                        half: Vector3::new(0.09, 0.04, 0.06),
                    },
                    &frame,
                    at(0.0, 0.0, len / 2.0 + 0.06),
                    steel,
                    id,
                ),
            ];
            Placed {
                objects,
                centre,
                radius: len / 2.0 + 0.15,
            }
        }
        AnomalyClass::Satellite => {
            let s = rng.random_range(0.15..0.25);
            let centre = anchor + n * rng.random_range(0.6..1.4);
            let frame = IsometryMatrix3::from_parts(
                Translation3::from(centre.coords),
                random_rotation(rng),
            );
            let foil = Material::new([0.85, 0.62, 0.22], Texture::Foil)
                .shiny(0.9, 60.0)
                .glinting(1.0);
            let panel = Material::new([0.06, 0.09, 0.28], Texture::SolarCells).shiny(0.7, 120.0);
            let white = Material::new([0.85, 0.85, 0.85], Texture::Plain).shiny(0.3, 40.0);
            let wing = 2.2 * s;
            let mut objects = vec![object(
                Shape::Cuboid {
                    half: Vector3::repeat(s),
                },
                &frame,
                IsometryMatrix3::identity(),
                foil,
                id,
            )];
            for side in [-1.0, 1.0] {
                objects.push(object(
                    Shape::Cuboid {
                        half: Vector3::new(wing, 0.8 * s, 0.01),
                    },
                    &frame,
                    at(side * (s + wing + 0.03), 0.0, 0.0),
                    panel,
                    id,
                ));
            }
            objects.push(object(
                Shape::Cylinder {
                    radius: 0.015,
                    half_length: 0.6 * s,
                },
                &frame,
                at(0.0, 0.0, 1.6 * s),
                white,
                id,
            ));
            Placed {
                objects,
                centre,
                radius: s + 2.0 * wing + 0.03,
            }
        }
    }
}

/// Builds a random convex hard negative (one of [`HARD_NEGATIVE_SHAPES`]) floating near
/// `anchor`; mask id 10. Returns its shape name with it.
pub fn hard_negative(
    anchor: &Point3<f64>,
    normal: &Unit<Vector3<f64>>,
    rng: &mut ChaCha8Rng,
) -> (&'static str, Placed) {
    let kind = rng.random_range(0..HARD_NEGATIVE_SHAPES.len());
    let half = Vector3::new(
        rng.random_range(0.12..0.4),
        rng.random_range(0.12..0.4),
        rng.random_range(0.12..0.4),
    );
    let shape = match kind {
        0 => Shape::Cuboid { half },
        1 => Shape::Ellipsoid { radii: half },
        _ => {
            // A box with its corners cut off by random planes: convex by construction.
            let mut planes: Vec<(Vector3<f64>, f64)> = (0..3)
                .flat_map(|i| {
                    let mut e = Vector3::zeros();
                    e[i] = 1.0;
                    [(e, half[i]), (-e, half[i])]
                })
                .collect();
            for _ in 0..rng.random_range(3..8) {
                let dir = Vector3::new(
                    rng.random_range(-1.0..1.0),
                    rng.random_range(-1.0..1.0),
                    rng.random_range(-1.0..1.0),
                )
                .normalize();
                let reach = dir.abs().dot(&half);
                planes.push((dir, reach * rng.random_range(0.55..0.9)));
            }
            Shape::Polyhedron {
                planes,
                bound: half,
            }
        }
    };
    let centre = anchor + normal.into_inner() * rng.random_range(0.4..1.2);
    let pose = IsometryMatrix3::from_parts(Translation3::from(centre.coords), random_rotation(rng));
    let palette = [
        [0.7, 0.2, 0.15],
        [0.2, 0.5, 0.25],
        [0.75, 0.75, 0.7],
        [0.25, 0.3, 0.6],
        [0.5, 0.45, 0.4],
    ];
    let texture = if rng.random_bool(0.5) {
        Texture::Plain
    } else {
        Texture::Bands
    };
    let material = Material::new(palette[rng.random_range(0..palette.len())], texture)
        .shiny(rng.random_range(0.1..0.6), 40.0);
    let placed = Placed {
        objects: vec![Object {
            shape,
            pose,
            material,
            label: ids::HARD_NEGATIVE,
        }],
        centre,
        radius: half.norm(),
    };
    (HARD_NEGATIVE_SHAPES[kind], placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn class_names_round_trip_and_never_name_a_hard_negative_shape() {
        for c in AnomalyClass::ALL {
            assert_eq!(c.name().parse::<AnomalyClass>().unwrap(), c);
            assert!(!HARD_NEGATIVE_SHAPES.contains(&c.name()));
        }
        assert!("ellipsoid".parse::<AnomalyClass>().is_err());
    }

    #[test]
    fn every_part_lies_within_the_bounding_radius() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let normal = Vector3::z_axis();
        for i in 0..40 {
            let placed = if i % 5 == 4 {
                hard_negative(&Point3::origin(), &normal, &mut rng).1
            } else {
                anomaly(
                    AnomalyClass::ALL[i % 4],
                    &Point3::origin(),
                    &normal,
                    &mut rng,
                )
            };
            for o in &placed.objects {
                let b = o.aabb();
                // The box's farthest corner may exceed the sphere; its centre may not.
                let c = nalgebra::center(&b.min, &b.max);
                assert!(
                    (c - placed.centre).norm() <= placed.radius + 1e-9,
                    "case {i}"
                );
            }
        }
    }
}
