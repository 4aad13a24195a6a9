//! What a frame shows: shapes in local frames, materials with procedural textures, the objects
//! that pair them with a pose and a mask id, and the Earth.
use nalgebra::{IsometryMatrix3, Point3, Vector3};

use super::raycast::{Aabb, Bvh};

/// Mask ids written by the generator (DESIGN.md; 9 and 10 match [`crate::data::MaskIds`]).
pub mod ids {
    /// Nothing hit: black space and stars.
    pub const SPACE: u8 = 0;
    /// The Earth (background body).
    pub const EARTH: u8 = 1;
    /// Pressurised modules.
    pub const MODULE: u8 = 2;
    /// Truss and its pylons.
    pub const TRUSS: u8 = 3;
    /// Radiator panels.
    pub const RADIATOR: u8 = 4;
    /// Solar array blankets and their masts.
    pub const SOLAR_ARRAY: u8 = 5;
    /// Grapple fixtures (the targets of every trajectory).
    pub const GRAPPLE_FIXTURE: u8 = 6;
    /// Nodes joining modules (short, wider cylinders).
    pub const NODE: u8 = 7;
    /// Antennas and other small external equipment.
    pub const EQUIPMENT: u8 = 8;
    /// The sequence's anomaly (blanket, cable, tool, satellite).
    pub const ANOMALY: u8 = 9;
    /// Training hard negatives (random convex shapes).
    pub const HARD_NEGATIVE: u8 = 10;
}

/// A shape in its own frame; every shape is centred on its local origin.
#[derive(Clone, Debug)]
pub enum Shape {
    /// A sphere of this radius.
    Sphere { radius: f64 },
    /// An axis-aligned ellipsoid with these semi-axes.
    Ellipsoid { radii: Vector3<f64> },
    /// A box with these half extents.
    Cuboid { half: Vector3<f64> },
    /// A capped cylinder along local z, from `-half_length` to `half_length`.
    Cylinder { radius: f64, half_length: f64 },
    /// A cylinder along local z with hemispherical ends (a cable link).
    Capsule { radius: f64, half_length: f64 },
    /// A convex polyhedron: the points with `normal . x <= offset` for every plane, inside
    /// the box of half extents `bound` (a box cut by planes, so the bound holds by construction).
    Polyhedron {
        planes: Vec<(Vector3<f64>, f64)>,
        bound: Vector3<f64>,
    },
}

impl Shape {
    /// Half extents of the local axis-aligned bounding box.
    pub fn local_half_extents(&self) -> Vector3<f64> {
        match self {
            Shape::Sphere { radius } => Vector3::repeat(*radius),
            Shape::Ellipsoid { radii } => *radii,
            Shape::Cuboid { half } => *half,
            Shape::Cylinder {
                radius,
                half_length,
            } => Vector3::new(*radius, *radius, *half_length),
            Shape::Capsule {
                radius,
                half_length,
            } => Vector3::new(*radius, *radius, half_length + radius),
            Shape::Polyhedron { bound, .. } => *bound,
        }
    }

    /// The same shape with every length multiplied by `k` (about its local origin).
    pub fn scaled(&self, k: f64) -> Shape {
        match self {
            Shape::Sphere { radius } => Shape::Sphere { radius: radius * k },
            Shape::Ellipsoid { radii } => Shape::Ellipsoid { radii: radii * k },
            Shape::Cuboid { half } => Shape::Cuboid { half: half * k },
            Shape::Cylinder {
                radius,
                half_length,
            } => Shape::Cylinder {
                radius: radius * k,
                half_length: half_length * k,
            },
            Shape::Capsule {
                radius,
                half_length,
            } => Shape::Capsule {
                radius: radius * k,
                half_length: half_length * k,
            },
            Shape::Polyhedron { planes, bound } => Shape::Polyhedron {
                planes: planes.iter().map(|(n, d)| (*n, d * k)).collect(),
                bound: bound * k,
            },
        }
    }
}

/// Procedural surface patterns, evaluated on the local hit point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Texture {
    /// Uniform colour.
    Plain,
    /// Multi-layer insulation: quilted blankets with seams and slight mottling (modules).
    Mli,
    /// Lattice of bays with dark openings (truss faces).
    Lattice,
    /// Radiator panel: tubes running along local x.
    Radiator,
    /// Solar cells: dark blue cells in a grid with bright gaps along local x/y.
    SolarCells,
    /// Crinkled metallic foil (thermal blankets on anomalies and satellites).
    Foil,
    /// Alternating bands along local z (cables, tool grips).
    Bands,
}

/// How a surface reflects light.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Material {
    /// Linear RGB albedo in [0, 1].
    pub albedo: Vector3<f64>,
    pub texture: Texture,
    /// Strength of the Blinn-Phong highlight.
    pub specular: f64,
    /// Blinn-Phong exponent (higher: tighter highlight).
    pub shininess: f64,
    /// Strength of per-frame micro-facet glints (0: none).
    pub glint: f64,
}

impl Material {
    /// A material with a colour and texture and a dull default highlight.
    pub fn new(albedo: [f64; 3], texture: Texture) -> Self {
        Self {
            albedo: Vector3::from(albedo),
            texture,
            specular: 0.15,
            shininess: 30.0,
            glint: 0.0,
        }
    }

    /// The same material with a highlight of `strength` and exponent `shininess`.
    pub fn shiny(mut self, strength: f64, shininess: f64) -> Self {
        self.specular = strength;
        self.shininess = shininess;
        self
    }

    /// The same material with glints of `strength`.
    pub fn glinting(mut self, strength: f64) -> Self {
        self.glint = strength;
        self
    }
}

/// A shape placed in the world with a material and the mask id its pixels get.
#[derive(Clone, Debug)]
pub struct Object {
    pub shape: Shape,
    /// Local-to-world rigid transform.
    pub pose: IsometryMatrix3<f64>,
    pub material: Material,
    pub label: u8,
}

impl Object {
    /// World-space bounding box (the local box's eight corners, transformed).
    pub fn aabb(&self) -> Aabb {
        let h = self.shape.local_half_extents();
        let mut b = Aabb::empty();
        for i in 0..8 {
            let corner = Point3::new(
                if i & 1 == 0 { -h.x } else { h.x },
                if i & 2 == 0 { -h.y } else { h.y },
                if i & 4 == 0 { -h.z } else { h.z },
            );
            b.grow(&(self.pose * corner));
        }
        b
    }
}

/// A large sphere seen as a background body (mask id 1), never shadowing the station.
#[derive(Clone, Debug)]
pub struct Earth {
    pub centre: Point3<f64>,
    pub radius: f64,
}

impl Earth {
    /// The Earth as seen from low orbit: 6371 km radius, 400 km below the station, which sits
    /// at the world origin.
    pub fn below_station() -> Self {
        Self {
            centre: Point3::new(0.0, 0.0, -6_771_000.0),
            radius: 6_371_000.0,
        }
    }
}

/// Everything a frame can hit, with a bounding-volume hierarchy over the objects.
#[derive(Clone, Debug)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub earth: Option<Earth>,
    pub(super) bvh: Bvh,
}

impl Scene {
    /// Builds the scene and its hierarchy.
    pub fn new(objects: Vec<Object>, earth: Option<Earth>) -> Self {
        let boxes: Vec<Aabb> = objects.iter().map(Object::aabb).collect();
        let bvh = Bvh::build(&boxes);
        Self {
            objects,
            earth,
            bvh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::MaskIds;

    #[test]
    fn ids_match_the_reader_defaults() {
        let d = MaskIds::default();
        assert_eq!(ids::ANOMALY, d.anomaly);
        assert_eq!(ids::HARD_NEGATIVE, d.hard_negative);
    }

    #[test]
    fn rotated_box_bounds_contain_its_corners() {
        let obj = Object {
            shape: Shape::Cuboid {
                half: Vector3::new(1.0, 0.5, 0.25),
            },
            pose: IsometryMatrix3::new(Vector3::new(3.0, 0.0, 0.0), Vector3::new(0.0, 0.0, 0.7)),
            material: Material::new([0.5; 3], Texture::Plain),
            label: 3,
        };
        let b = obj.aabb();
        let c = obj.pose * Point3::new(1.0, 0.5, 0.25);
        assert!(b.contains(&c));
        assert!(!b.contains(&Point3::new(0.0, 0.0, 0.0)));
    }
}
